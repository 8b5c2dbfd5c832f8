"""The method contract, for every registered method (no list to edit: a new method is tested once it is
registered): it builds from its demo preset, takes one optimiser step on real slices, maps a volume
(``[S, 1, H, W]`` map and reconstruction, finite; the residual when it declares ``map_is_residual``), keeps
its declared inference settings and refuses others, and its saved weights load back to the same map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mddpm.config import build_method, resolve_config
from mddpm.data.cache import load_prepared
from mddpm.data.grids import get_grid
from mddpm.data.prepare import prepare_dataset
from mddpm.errors import MddpmError
from mddpm.inference.predict import case_generator, score_volume
from mddpm.methods import all_methods
from mddpm.weights import build_from_weights, save_weights

# the shipped methods (a test's toy methods register themselves too, later; they have their own tests)
SHIPPED = sorted(name for name, spec in all_methods().items() if spec.build.__module__.startswith("mddpm.methods"))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """Four middle slices of a prepared phantom volume on the demo grid: ``(image [4, 1, H, W], mask)`` float32
    (a slab: enough for every method, a quarter of a volume's cost)."""
    from mddpm.data.synth.phantom import make_phantom_dataset

    dataset = make_phantom_dataset(tmp_path_factory.mktemp("contract") / "phantom")
    prepared = load_prepared(prepare_dataset(dataset, get_grid("demo"), workers=1, progress=False))
    image, mask, _ = prepared.volume(prepared.case_ids[0])
    middle = image.shape[0] // 2
    as_tensor = lambda a: torch.from_numpy(np.array(a[middle - 2:middle + 2], dtype=np.float32)).unsqueeze(1)  # noqa: E731
    return as_tensor(image), as_tensor(mask)


def _batch(method, image: torch.Tensor, mask: torch.Tensor) -> dict:
    """The slab's slices ``[4, 1, H, W]``, or for a volume method the slab as one volume ``[1, 4, H, W]``."""
    if method.sample_unit == "volume":
        return {"image": image[:, 0][None], "mask": mask[:, 0][None]}
    return {"image": image, "mask": mask}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_registered_method_keeps_the_contract(name, volume, tmp_path):
    image, mask = volume
    cfg = resolve_config(name, "demo")
    torch.manual_seed(0)
    method = build_method(cfg)
    generator = torch.Generator().manual_seed(0)

    groups = method.param_groups()
    if groups:  # one optimiser step moves the parameters of the group the step trains
        group = groups[method.optimizer_index(0)]
        before = [p.detach().clone() for p in group]
        optimiser = torch.optim.Adam(group, lr=1e-3, **method.optimizer_options()[method.optimizer_index(0)])
        loss = method.training_loss(_batch(method, image, mask), generator, 0)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        optimiser.step()
        assert any(not torch.equal(a, p.detach()) for a, p in zip(before, group))
    validation = method.validation_loss(_batch(method, image, mask), generator)
    assert validation.dim() == 0 and torch.isfinite(validation)

    method.eval()
    amap, recon = score_volume(method, image, mask, case_generator(3141, "case", torch.device("cpu")))
    assert amap.shape == recon.shape == image.shape and torch.isfinite(amap).all() and torch.isfinite(recon).all()
    if method.map_is_residual:  # what the method declares about its map holds
        assert torch.allclose(amap, (image - recon).abs())
    settings = method.inference_settings()  # declared settings take their own values; others are refused
    method.set_inference(**settings)
    assert method.inference_settings() == settings
    with pytest.raises(MddpmError, match="has no inference setting no_such_setting"):
        method.set_inference(no_such_setting=1)

    path = save_weights(tmp_path / "best.pt", name, cfg, method.state_dict(), 1, float(validation))
    again, payload = build_from_weights(path, name)
    assert payload["method"] == name and payload["config"] == cfg
    amap2, recon2 = score_volume(again, image, mask, case_generator(3141, "case", torch.device("cpu")))
    assert torch.equal(amap, amap2) and torch.equal(recon, recon2)
