"""A model that costs nothing: the same short answer to everything (for measuring framework overhead)."""

from thud_mt.models.base import Answer, Capabilities


class Zero:
    name = "zero"
    capabilities = Capabilities()
    fingerprint = "zero-1"

    def answer(self, queries):
        return [Answer(text="Yes.") for _ in queries]


def factory(options):
    return Zero()
