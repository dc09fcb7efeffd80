"""PTQ's result; :func:`quant.sidecar.save` writes it with its sidecar and summary."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quant.calibration import CalibrationSet
    from quant.float_model import FloatModel
    from quant.options import QuantizeOptions
    from quant.ptq.equalize import EqualizeReport
    from quant.ptq.weights import WeightReport

@dataclasses.dataclass(frozen=True)
class QuantizedModel:
    """An int8 model and what produced it.

    Attributes:
        tflite: the flatbuffer bytes.
        float_model: the :class:`quant.float_model.FloatModel` it came from.
        calibration: the :class:`quant.calibration.CalibrationSet` used.
        options: the :class:`quant.options.QuantizeOptions` used.
        equalization: the cross-layer equalization report, when it ran.
        ranges_changed: activation ranges replaced between calibration and quantization.
        weights: the :class:`quant.ptq.weights.WeightReport` of the weight stage.
        timings: seconds per stage.
        drift: quick drift on held-out images (filled by :func:`with_drift`).
        edgetpu_problems: ops that would not map (empty unless the caller allowed them).
    """

    tflite: bytes
    float_model: FloatModel
    calibration: CalibrationSet
    options: QuantizeOptions
    equalization: EqualizeReport | None = None
    ranges_changed: int = 0
    weights: WeightReport | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    drift: dict[str, Any] | None = None
    edgetpu_problems: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """Return the output stem, ``<model>_int8``."""
        return f"{self.float_model.name}_int8"

    def with_drift(self, drift: dict[str, Any]) -> QuantizedModel:
        """Return a copy carrying a quick drift measurement."""
        return dataclasses.replace(self, drift=drift)

    def derived_figures(self) -> dict[str, Any]:
        """Return what only PTQ derives, for the sidecar: equalization, ranges, weight stage."""
        cle = self.equalization
        return {
            "cross_layer_equalization": None if cle is None else {
                "pairs": len(cle.pairs),
                "max_range_ratio_before": cle.max_range_ratio_before,
                "max_range_ratio_after": cle.max_range_ratio_after,
            },
            "ranges_changed": self.ranges_changed,
            "weight_stage": None if self.weights is None else dataclasses.asdict(self.weights),
        }
