"""Tiny hub models made here, with no hub: `python3 hub_models.py hf OUT` writes a BERT-style encoder, a
GPT-style decoder and a ViT (transformers, from configurations, random weights, `save_pretrained` with
safetensors) and the encoder's and decoder's tokenizers (WordPiece / BPE trained with `tokenizers` on a few
words) under OUT/{bert,gpt,vit}; `python3 hub_models.py tf OUT` writes a tiny Keras image classifier as a
SavedModel under OUT/keras_cnn. Run inside the server images (tests/test_hubs.py does), so the host needs
neither transformers nor TensorFlow."""

from __future__ import annotations

import sys
from pathlib import Path

WORDS = (
    "the quick brown fox jumps over the lazy dog while a profiler counts every token and every image it "
    "sends to a model served in a container under a cpu cap"
).split()
VOCAB = 2000  # the models' vocabulary: token ids the profiler draws lie in [1000, 2000)


def make_hf(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        ViTConfig,
        ViTForImageClassification,
    )

    torch.manual_seed(0)
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]

    # a BERT-style encoder (feature-extraction) with a WordPiece tokenizer
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    )
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    wp.decoder = decoders.WordPiece()
    bert_dir = out / "bert"
    BertModel(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            max_position_embeddings=512,
        )
    ).save_pretrained(bert_dir)
    PreTrainedTokenizerFast(
        tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        model_max_length=512,
    ).save_pretrained(bert_dir)  # fmt: skip

    # a GPT-style decoder (text-generation) with a byte-level BPE tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    eos = bpe.token_to_id("<|endoftext|>")
    gpt_dir = out / "gpt"
    GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=512,
            n_embd=64,
            n_layer=2,
            n_head=4,
            bos_token_id=eos,
            eos_token_id=eos,
        )
    ).save_pretrained(gpt_dir)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>", model_max_length=512
    ).save_pretrained(gpt_dir)

    # a ViT image classifier (image-classification); no image processor: ImageNet normalisation
    ViTForImageClassification(
        ViTConfig(
            image_size=64,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            num_labels=10,
        )
    ).save_pretrained(out / "vit")


def make_tf(out: Path) -> None:
    import tensorflow as tf

    tf.random.set_seed(0)
    inputs = tf.keras.Input(shape=(None, None, 3), name="image")
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(10)(x)
    model = tf.keras.Model(inputs, outputs)
    model.export(str(out / "keras_cnn"))  # a SavedModel with a serving_default signature


if __name__ == "__main__":
    which, target = sys.argv[1], Path(sys.argv[2])
    (make_hf if which == "hf" else make_tf)(target)
    print(f"made {which} models under {target}")
