"""The image tower's mirror view and the ensemble of towers (pure torch, random weights)."""

import torch

from moderation.models.towers import EmojiCNN, EmojiCNNEnsemble


def test_mirror_view_averages_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    plain = EmojiCNN(16, (4, 8)).eval()
    mirrored = EmojiCNN(16, (4, 8), mirror_view=True).eval()
    mirrored.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 40, 40)
    with torch.inference_mode():
        both = plain(x) + plain(torch.flip(x, dims=[3]))
        expected = both / both.norm(dim=-1, keepdim=True)
        out = mirrored(x)
        assert torch.allclose(out, expected, atol=1e-5)
        assert torch.allclose(out, mirrored(torch.flip(x, dims=[3])), atol=1e-5)
        assert not torch.allclose(plain(x), plain(torch.flip(x, dims=[3])), atol=1e-3)


def test_an_ensemble_serves_the_normalised_mean_of_its_towers() -> None:
    torch.manual_seed(0)
    ensemble = EmojiCNNEnsemble(2, 16, (4, 8), mirror_view=True).eval()
    x = torch.randn(3, 3, 40, 40)
    with torch.inference_mode():
        a, b = (m(x) for m in ensemble.members)
        expected = (a + b) / (a + b).norm(dim=-1, keepdim=True)
        assert torch.allclose(ensemble(x), expected, atol=1e-5)
        assert not torch.allclose(a, b, atol=1e-3)  # two towers, not one twice


def test_view_sizes_average_the_image_embedded_at_each_size() -> None:
    torch.manual_seed(0)
    plain = EmojiCNN(16, (4, 8)).eval()
    multi = EmojiCNN(16, (4, 8), view_sizes=(32, 40, 48)).eval()
    multi.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 48, 48)
    with torch.inference_mode():
        views = [plain(torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear"))
                 for s in (32, 40)] + [plain(x)]
        total = torch.stack(views).sum(0)
        assert torch.allclose(multi(x), total / total.norm(dim=-1, keepdim=True), atol=1e-5)
        assert not torch.allclose(multi(x), plain(x), atol=1e-3)
        only_input = EmojiCNN(16, (4, 8), view_sizes=(48,)).eval()
        only_input.load_state_dict(plain.state_dict())
        assert torch.equal(only_input(x), plain(x))  # the input's own size is not resized
