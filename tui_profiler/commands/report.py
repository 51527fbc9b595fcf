"""placeholder"""


def add_parser(sub):  # noqa
    pass
