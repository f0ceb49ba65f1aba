"""Attention and the VAE in chunks on MPS (the runtime helper): the chunked result equals the
unchunked one on the CPU, no piece exceeds the byte budget, and nothing changes off MPS."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch", reason="the runtime helper is exercised with the verify extra (torch) installed")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from latentsync_mps.payload.runtime import _lsync_port as helper  # noqa: E402

F = torch.nn.functional


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (helper.DEVICE_ENV, helper.DTYPE_ENV, helper.CHUNKING_ENV, helper.CHUNK_BYTES_ENV):
        monkeypatch.delenv(name, raising=False)


def record_sdpa(monkeypatch):
    """Count the real SDPA calls and the size of each score matrix (bytes, float32)."""
    calls: list[int] = []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        lead = 1
        for size in query.shape[:-2]:
            lead *= size
        calls.append(lead * query.shape[-2] * key.shape[-2] * 4)
        return real(query, key, value, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


CASES = [
    # (query shape, key shape, mask shape or None, is_causal)
    ((2, 4, 64, 8), (2, 4, 80, 8), None, False),  # (batch, heads, tokens, dim), cross-attention
    ((6, 33, 8), (6, 33, 8), (6, 33, 33), False),  # LatentSync's (batch*heads, tokens, dim) with a full mask
    ((6, 33, 8), (6, 33, 8), (6, 1, 33), False),  # a mask broadcast over query rows
    ((3, 2, 17, 8), (3, 2, 17, 8), (1, 1, 17, 17), False),  # a mask broadcast over the batch
    ((2, 3, 40, 8), (2, 3, 40, 8), None, True),  # causal
    ((1, 100, 8), (1, 100, 8), None, False),  # a single batch element: rows only
]


@pytest.mark.parametrize(("q_shape", "k_shape", "mask_shape", "causal"), CASES)
@pytest.mark.parametrize("budget", [1, 1000, 20_000, 10**9])
def test_chunked_attention_equals_unchunked_on_cpu(q_shape, k_shape, mask_shape, causal, budget):
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(q_shape, generator=generator)
    key = torch.randn(k_shape, generator=generator)
    value = torch.randn(k_shape, generator=generator)
    mask = None if mask_shape is None else torch.randn(mask_shape, generator=generator)
    expected = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=causal)
    chunked = helper.chunked_scaled_dot_product_attention(query, key, value, mask, 0.0, causal, budget=budget)
    torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)


def test_boolean_mask_and_causal_combine_like_the_unchunked_call():
    query = torch.randn(2, 24, 8)
    mask = torch.rand(2, 24, 24) > 0.3
    mask[..., 0] = True  # every row sees at least one key
    expected = F.scaled_dot_product_attention(query, query, query, attn_mask=mask & torch.ones(24, 24).tril().bool())
    chunked = helper.chunked_scaled_dot_product_attention(query, query, query, mask, 0.0, True, budget=600)
    torch.testing.assert_close(chunked, expected)


def test_no_piece_exceeds_the_budget(monkeypatch):
    calls = record_sdpa(monkeypatch)
    query = torch.randn(8, 4, 256, 16)  # 8*4 x 256 x 256 float32 scores = 8 MiB unchunked
    budget = 256 * 1024
    out = helper.chunked_scaled_dot_product_attention(query, query, query, budget=budget)
    assert out.shape == query.shape
    assert len(calls) > 1 and max(calls) <= budget


def test_float16_attention_chunks_are_sized_for_the_float32_scores_of_the_mps_math_kernel(monkeypatch):
    """MPS's math kernel keeps the score matrix in float32 whatever the input dtype: a float16 query
    whose scores fit the budget at 2 bytes each does not fit at 4, and must be split (a chunk sized
    from the input dtype is twice too big and can pass Metal's 2**32-byte limit)."""
    calls = record_sdpa(monkeypatch)  # counts each piece's scores at 4 bytes
    query = torch.randn(2, 4, 64, 8, dtype=torch.float16)
    budget = 2 * 4 * 64 * 64 * 2  # all the scores, at float16's 2 bytes
    out = helper.chunked_scaled_dot_product_attention(query, query, query, budget=budget)
    assert len(calls) > 1, "not split: the chunk was sized for 2-byte scores"
    assert max(calls) <= budget
    torch.testing.assert_close(out, F.scaled_dot_product_attention(query, query, query), rtol=1e-3, atol=1e-3)


def test_budget_smaller_than_one_row_still_computes_row_by_row(monkeypatch):
    query = torch.randn(2, 10, 4)
    expected = F.scaled_dot_product_attention(query, query, query)
    calls = record_sdpa(monkeypatch)
    out = helper.chunked_scaled_dot_product_attention(query, query, query, budget=1)
    torch.testing.assert_close(out, expected)
    assert len(calls) == 20  # one batch element and one query row at a time


def test_off_mps_the_helper_is_the_plain_call(monkeypatch):
    query = torch.randn(2, 4, 64, 8)
    expected = F.scaled_dot_product_attention(query, query, query)
    calls = record_sdpa(monkeypatch)
    monkeypatch.setenv(helper.CHUNK_BYTES_ENV, "1")
    out = helper.scaled_dot_product_attention(query, query, query, attn_mask=None)
    assert len(calls) == 1
    torch.testing.assert_close(out, expected)


def test_force_chunks_on_any_device_and_reads_the_budget_from_the_environment(monkeypatch):
    query = torch.randn(1, 2, 64, 8)
    expected = F.scaled_dot_product_attention(query, query, query, scale=0.5)
    calls = record_sdpa(monkeypatch)
    monkeypatch.setenv(helper.CHUNKING_ENV, "force")
    monkeypatch.setenv(helper.CHUNK_BYTES_ENV, str(64 * 64 * 4))
    out = helper.scaled_dot_product_attention(query, query, query, dropout_p=0.0, scale=0.5)
    torch.testing.assert_close(out, expected)
    assert len(calls) == 2 and max(calls) <= 64 * 64 * 4


def test_chunking_is_on_for_mps_tensors_only_and_can_be_turned_off(monkeypatch):
    on_mps = types.SimpleNamespace(device=torch.device("mps"))
    on_cpu = torch.zeros(1)
    assert helper.chunking_enabled(on_mps) is True
    assert helper.chunking_enabled(on_cpu) is False
    monkeypatch.setenv(helper.CHUNKING_ENV, "0")
    assert helper.chunking_enabled(on_mps) is False
    monkeypatch.setenv(helper.CHUNKING_ENV, "force")
    assert helper.chunking_enabled(on_cpu) is True


def test_chunk_budget_default_and_validation(monkeypatch):
    assert helper.chunk_bytes() == 1 << 30 < 2**32
    monkeypatch.setenv(helper.CHUNK_BYTES_ENV, "2_000_000")
    assert helper.chunk_bytes() == 2_000_000
    for bad in ("lots", "0", "-5"):
        monkeypatch.setenv(helper.CHUNK_BYTES_ENV, bad)
        with pytest.raises(ValueError, match=helper.CHUNK_BYTES_ENV):
            helper.chunk_bytes()


# ---------------------------------------------------------------------------------------------
# VAE: a tiny stand-in with diffusers' interface (encode -> .latent_dist, decode -> .sample).


class Gaussian:
    """The shape of diffusers' DiagonalGaussianDistribution."""

    def __init__(self, parameters, deterministic=False):
        self.parameters = parameters
        self.deterministic = deterministic
        self.mean, self.logvar = parameters.chunk(2, dim=1)
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)

    def sample(self, generator=None):
        noise = torch.randn(self.mean.shape, generator=generator)
        return self.mean + self.std * noise


class TinyVAE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(block_out_channels=[8, 16], scaling_factor=0.18215)
        self.down = torch.nn.Conv2d(3, 8, 2, stride=2)
        self.up = torch.nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.calls: list[int] = []

    def encode(self, x, return_dict=True):
        self.calls.append(x.shape[0])
        dist = Gaussian(self.down(x))
        return types.SimpleNamespace(latent_dist=dist) if return_dict else (dist,)

    def decode(self, z, return_dict=True):
        self.calls.append(z.shape[0])
        sample = self.up(z)
        return types.SimpleNamespace(sample=sample) if return_dict else (sample,)


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return TinyVAE().eval()


def test_vae_chunks_equal_one_call(monkeypatch, vae):
    images = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        whole = vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(1))
        decoded = vae.decode(whole).sample
        monkeypatch.setenv(helper.CHUNKING_ENV, "force")
        # Two items per piece: encode's and decode's widest activation are the same size here.
        assert helper.vae_item_bytes(vae, images, False) == helper.vae_item_bytes(vae, torch.zeros(1, 4, 8, 8), True)
        monkeypatch.setenv(helper.CHUNK_BYTES_ENV, str(2 * helper.vae_item_bytes(vae, images, False)))
        vae.calls.clear()
        pieces = helper.vae_encode(vae, images).latent_dist.sample(torch.Generator().manual_seed(1))
        assert vae.calls == [2, 2, 2]
        torch.testing.assert_close(pieces, whole)
        vae.calls.clear()
        torch.testing.assert_close(helper.vae_decode(vae, whole).sample, decoded)
        assert vae.calls == [2, 2, 2]
        tuple_out = helper.vae_decode(vae, whole, return_dict=False)
        torch.testing.assert_close(tuple_out[0], decoded)
        torch.testing.assert_close(
            helper.vae_encode(vae, images, return_dict=False)[0].parameters, vae.encode(images).latent_dist.parameters
        )


def test_vae_is_one_call_off_mps_and_when_turned_off(monkeypatch, vae):
    images = torch.randn(4, 3, 16, 16)
    monkeypatch.setenv(helper.CHUNK_BYTES_ENV, "1")
    helper.vae_encode(vae, images)
    assert vae.calls == [4]
    monkeypatch.setattr(helper, "chunking_enabled", lambda tensor=None: True)
    monkeypatch.setenv(helper.CHUNKING_ENV, "0")
    vae.calls.clear()
    helper.vae_decode(vae, torch.randn(4, 4, 8, 8))
    assert vae.calls == [1, 1, 1, 1]  # chunking_enabled decides; with it forced on, pieces of one


def test_vae_output_that_cannot_be_joined_falls_back_to_one_call(monkeypatch):
    class Odd:
        config = types.SimpleNamespace(block_out_channels=[8])

        def __init__(self):
            self.calls = []

        def decode(self, z):
            self.calls.append(z.shape[0])
            return {"image": z}

    odd = Odd()
    monkeypatch.setenv(helper.CHUNKING_ENV, "force")
    monkeypatch.setenv(helper.CHUNK_BYTES_ENV, "1")
    out = helper.vae_decode(odd, torch.randn(3, 4, 2, 2))
    assert odd.calls == [1, 1, 1, 3] and out["image"].shape[0] == 3


class LargestTensor(TorchDispatchMode):
    """The largest tensor any aten op produces, in bytes."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return out


def test_every_vae_piece_stays_under_the_budget(monkeypatch):
    """A real diffusers AutoencoderKL with LatentSync's VAE shape (4 levels, widths doubling), small:
    the decoder's widest full-resolution activation is the second width (the upsampler output of
    the coarser block), so sizing by the first width made pieces twice the budget."""
    diffusers = pytest.importorskip("diffusers", reason="the verify extra brings diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=8,
        latent_channels=4,
    ).eval()
    latents = torch.randn(4, 4, 2, 2)  # 16x16 images
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    monkeypatch.setenv(helper.CHUNKING_ENV, "force")
    for call, batch, decoding in ((helper.vae_decode, latents, True), (helper.vae_encode, images, False)):
        one_item = LargestTensor()
        with torch.no_grad(), one_item:
            call(vae, batch[:1])
        budget = 2 * one_item.largest  # room for two items per piece
        monkeypatch.setenv(helper.CHUNK_BYTES_ENV, str(budget))
        assert helper.vae_item_bytes(vae, batch, decoding) >= one_item.largest  # never an underestimate
        measured = LargestTensor()
        with torch.no_grad(), measured:
            call(vae, batch)
        assert measured.largest <= budget, (decoding, measured.largest, budget)
        assert measured.largest > budget // 2  # and not needlessly small: two items did run together
