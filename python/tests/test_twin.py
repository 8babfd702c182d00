"""Unit tests of the twin itself: python3 -m unittest discover -s python/tests -t python (needs python3-torch)."""

import os
import struct
import tempfile
import unittest

import torch

from peer_twin import models, safetensors_io
from peer_twin.layers import product_key_topk

TINY_LM = dict(VocabularySize=24, ContextLength=16, ModelDimension=32, Layers=2, AttentionHeads=2, FeedForward="Peer",
               Peer=dict(Experts=64, Heads=2, TopK=4, KeyDimension=8, QueryBatchNorm=True))


def brute_force(s1, s2, k):
    """The top-k keys a*n+b of every row by score s1[a]+s2[b] descending, ties: smaller index first, NaN as -inf."""
    n = s1.shape[1]
    sums = (s1.unsqueeze(2) + s2.unsqueeze(1)).reshape(s1.shape[0], -1)
    sums = torch.where(torch.isnan(sums), torch.full_like(sums, -float("inf")), sums)
    return [sorted(range(n * n), key=lambda i: (-sums[r, i].item(), i))[:k] for r in range(s1.shape[0])]


class ProductKeyTopKTests(unittest.TestCase):
    def check(self, s1, s2, k):
        a, b = product_key_topk(s1, s2, k)
        self.assertEqual((a * s1.shape[1] + b).tolist(), brute_force(s1, s2, k))

    def test_random_scores(self):
        generator = torch.Generator().manual_seed(1)
        for _ in range(50):
            self.check(torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator), 4)

    def test_integer_scores_tie_to_the_smaller_index(self):
        generator = torch.Generator().manual_seed(2)
        for k in (1, 3, 8):
            for _ in range(50):
                self.check(torch.randint(-2, 3, (5, 8), generator=generator).float(), torch.randint(-2, 3, (5, 8), generator=generator).float(), k)

    def test_all_equal_scores_give_the_first_keys(self):
        a, b = product_key_topk(torch.zeros(1, 4), torch.zeros(1, 4), 3)
        self.assertEqual((a * 4 + b).tolist(), [[0, 1, 2]])

    def test_sums_that_round_together_and_nan(self):
        s1 = torch.tensor([[1e8, 1e8 + 8, 3.0, float("nan")]])
        s2 = torch.tensor([[0.5, 0.25, 0.0, -1.0]])
        self.check(s1, s2, 3)
        self.check(torch.tensor([[float("nan")] * 4]), torch.zeros(1, 4), 2)


def with_header(raw, header):
    """raw's data section under another header."""
    (length,) = struct.unpack("<Q", raw[:8])
    return struct.pack("<Q", len(header)) + header + raw[8 + length:]


class SafetensorsTests(unittest.TestCase):
    def test_model_round_trip_is_exact(self):
        torch.manual_seed(0)
        model = models.TransformerLanguageModel(TINY_LM).eval()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "m.safetensors")
            models.save(model, path)
            loaded, metadata = models.load(path)
            self.assertEqual(metadata["peer.model"], "language_model")
            tokens = torch.randint(0, 24, (3, 16))
            with torch.no_grad():
                self.assertTrue(torch.equal(model(tokens), loaded(tokens)))

    def test_an_ensemble_is_refused_by_name(self):
        model = models.TransformerLanguageModel(TINY_LM).eval()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "e.safetensors")
            models.save(model, path, {"peer.ensemble_size": "3"})
            with self.assertRaisesRegex(ValueError, "an ensemble of 3 classifiers"):
                models.load(path)

    def test_hostile_headers_are_refused(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "t.safetensors")
            safetensors_io.save(path, {"x": torch.arange(4, dtype=torch.float32)})
            raw = open(path, "rb").read()
            for name, data, message in [
                ("too long", struct.pack("<Q", len(raw)) + raw[8:], "runs past the end"),
                ("cut", raw[:-4], "outside the"),
                ("appended", raw + b"\0", "no tensor owns"),
                ("name twice", with_header(raw, b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'), "twice"),
            ]:
                with self.subTest(name):
                    open(path, "wb").write(data)
                    with self.assertRaisesRegex(ValueError, message):
                        safetensors_io.load(path)


if __name__ == "__main__":
    unittest.main()
