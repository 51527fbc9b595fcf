"""Write a small llama-architecture model with random weights as GGUF (run at image build time; no hub).

Shape: 8 layers, d_model 512, 8 heads (no grouped-query attention), SwiGLU MLP 1408, RMSNorm, RoPE,
context 2048, a 4,096-token vocabulary, float32: about 29.5 M parameters, 118 MB. Its compute per token is a
real decoder's of that size (llama.cpp runs it like any llama model); its text is noise.

Tokenizer: a SentencePiece-style ("llama") vocabulary made here: the control tokens, the 256 byte-fallback
tokens, every printable ASCII character, and every substring of "▁word" for the common English words the
load generator's synthetic prompts are made of (`tui_profiler.load.inputs._WORDS`, copied below so the
build needs no tui-profiler), the rest filled with placeholder pieces. llama.cpp's SPM tokenizer merges
adjacent pieces whose concatenation is in the vocabulary, and "▁" only starts a piece, so each of those words
is exactly one token and a prompt of N words is N tokens after the `<s>` it prepends.

    python3 make_model.py OUT.gguf
"""

from __future__ import annotations

import string
import sys

import gguf
import numpy as np

WORDS = (
    "the of and to in is was for on that with as by at from his it an were are which this be had not or "
    "but have one first new two their after also its has they all been who more her time other she when "
    "year would into there some can most than only over about many city school part may world later used "
    "three known such during out state people made well up between where both team under then high found"
).split()

LAYERS, HIDDEN, HEADS, FFN, CONTEXT, VOCAB = 8, 512, 8, 1408, 2048, 4096
SEED = 0


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: <unk> <s> </s>, bytes <0x00>..<0xFF>, characters, word pieces."""
    T = gguf.TokenType
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL] + [T.BYTE] * 256
    pieces: dict[str, None] = dict.fromkeys(
        ["▁", *(c for c in string.printable if c.isprintable() and c != " ")]
    )
    for word in WORDS:
        w = "▁" + word
        for length in range(2, len(w) + 1):
            for start in range(len(w) - length + 1):
                pieces[w[start : start + length]] = None
    normal = list(pieces)
    normal += [f"▁w{i}" for i in range(VOCAB - len(tokens) - len(normal))]
    tokens += normal
    types += [T.NORMAL] * len(normal)
    # longer pieces score higher: merges build whole words
    scores = [0.0] * 259 + [float(len(p)) for p in normal]
    assert len(tokens) == VOCAB, len(tokens)
    return tokens, scores, [int(t) for t in types]


def main(out: str) -> None:
    rng = np.random.default_rng(SEED)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name("tui-profiler-llama-small-random")
    w.add_context_length(CONTEXT)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens, scores, types = vocabulary()
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    ones = np.ones(HIDDEN, dtype=np.float32)
    out_std = 0.02 / np.sqrt(2 * LAYERS)  # GPT-2's scale for the residual projections
    w.add_tensor("token_embd.weight", normal(VOCAB, HIDDEN))
    for i in range(LAYERS):  # numpy shapes are (out, in): GGUF stores them reversed, as llama.cpp expects
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.attn_q.weight", normal(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_k.weight", normal(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_v.weight", normal(HIDDEN, HIDDEN))
        w.add_tensor(f"blk.{i}.attn_output.weight", normal(HIDDEN, HIDDEN, std=out_std))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", normal(FFN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_up.weight", normal(FFN, HIDDEN))
        w.add_tensor(f"blk.{i}.ffn_down.weight", normal(HIDDEN, FFN, std=out_std))
    w.add_tensor("output_norm.weight", ones)
    w.add_tensor("output.weight", normal(VOCAB, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1])
