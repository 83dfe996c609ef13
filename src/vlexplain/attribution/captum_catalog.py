"""The Captum algorithms the bridge knows: how each one is driven, and the ones it refuses.

Every entry says what the bridge must give the algorithm (a baseline, a distribution of
baselines, a feature mask, a sliding window, a block of a tower) and whether it draws from the
global random generator (then each pair runs alone, under its own seed). ``REFUSED`` gives the
one-line reason for the algorithms of ``captum.attr`` that explain something other than the
pair's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gradient", "perturbation", "activation"]
Baselines = Literal["none", "one", "distribution"]
Features = Literal["none", "mask", "window", "layer_mask"]


@dataclass(frozen=True)
class Algorithm:
    """How the bridge drives one Captum algorithm.

    Attributes:
        name: the class name in ``captum.attr``.
        kind: ``gradient`` (back-propagates; takes ``smooth``), ``perturbation`` (forward passes
            only) or ``activation`` (no target: reads a block's activations).
        summary: one line for listings.
        paper: where the algorithm comes from.
        layer: attributes to the output of a block of the tower (``layer`` options).
        baselines: none, one reference input, or a distribution of references.
        features: the image regions / tokens it perturbs: a feature mask, a sliding window or a
            mask over the block's positions.
        random: draws from the global random generator (each pair then runs alone, seeded).
        sides: the sides it can explain.
        rule_modules: class names of the modules whose backward pass it modifies; on a tower with
            none of them it would return plain gradients, so it is refused there.
        lrp: needs a propagation rule for every module (Captum's LRP).
        reduce: how attributions are reduced over channels / the embedding by default: ``sum``,
            ``norm`` (L2), ``max`` (of magnitudes); ``saliency``: max over pixel channels, L2
            norm over the embedding, as vlexplain's ``saliency``.
        whole_text: mixes a text's positions (a mean over them, a distance between inputs), so
            padding would change the result: on the text side each pair runs alone, unpadded.
    """

    name: str
    kind: Kind
    summary: str
    paper: str = ""
    layer: bool = False
    baselines: Baselines = "none"
    features: Features = "none"
    random: bool = False
    sides: tuple[str, ...] = ("image", "text")
    rule_modules: tuple[str, ...] = ()
    lrp: bool = False
    reduce: str = "sum"
    whole_text: bool = False


_RELU = ("ReLU",)
_DEEPLIFT = (
    "ReLU",
    "ELU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Softmax",
)
_SHAP = "Lundberg & Lee. A Unified Approach to Interpreting Model Predictions. NeurIPS 2017"
_IG = "Sundararajan, Taly & Yan. Axiomatic Attribution for Deep Networks. ICML 2017"
_DL = (
    "Shrikumar, Greenside & Kundaje. Learning Important Features Through Propagating Activation Differences. ICML 2017"
)
_ZF = "Zeiler & Fergus. Visualizing and Understanding Convolutional Networks. ECCV 2014"
_CAM = "Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. ICCV 2017"
_LRP = "Bach et al. On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation. PLoS ONE 2015"

ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm(
            "Saliency",
            "gradient",
            "input-gradient magnitude (pixels: max over channels; tokens: L2 norm)",
            "Simonyan, Vedaldi & Zisserman. Deep Inside Convolutional Networks. ICLR workshop 2014",
            reduce="saliency",
        ),
        Algorithm("InputXGradient", "gradient", "input times gradient", "Shrikumar et al. Not Just a Black Box. 2016"),
        Algorithm("IntegratedGradients", "gradient", "integrated gradients from a baseline", _IG, baselines="one"),
        Algorithm(
            "GradientShap",
            "gradient",
            "expected gradients over noisy points between the input and random baselines",
            _SHAP,
            baselines="distribution",
            random=True,
        ),
        Algorithm("DeepLift", "gradient", "DeepLIFT rescale rule from a baseline", _DL, baselines="one", rule_modules=_DEEPLIFT),
        Algorithm(
            "DeepLiftShap", "gradient", "DeepLIFT averaged over a distribution of baselines", _SHAP,
            baselines="distribution", rule_modules=_DEEPLIFT,
        ),
        Algorithm(
            "GuidedBackprop", "gradient", "gradients with negative ReLU gradients zeroed",
            "Springenberg et al. Striving for Simplicity: The All Convolutional Net. ICLR workshop 2015",
            rule_modules=_RELU,
        ),
        Algorithm("Deconvolution", "gradient", "deconvolution: ReLU applied to the backward signal", _ZF, rule_modules=_RELU),
        Algorithm("LRP", "gradient", "layer-wise relevance propagation (epsilon rule)", _LRP, lrp=True),
        Algorithm("Occlusion", "perturbation", "score drop when a sliding window is replaced by a baseline", _ZF,
                  baselines="one", features="window"),
        Algorithm("FeatureAblation", "perturbation", "score drop when one patch cell / token is replaced by a baseline",
                  baselines="one", features="mask"),
        Algorithm(
            "ShapleyValueSampling", "perturbation", "Shapley values of patch cells / tokens from sampled orderings",
            "Strumbelj & Kononenko. An Efficient Explanation of Individual Classifications using Game Theory. JMLR 2010",
            baselines="one", features="mask", random=True,
        ),
        Algorithm(
            "ShapleyValues", "perturbation", "exact Shapley values of a few image regions (every ordering)",
            "Shapley. A Value for n-Person Games. 1953", baselines="one", features="mask", sides=("image",),
        ),
        Algorithm(
            "Lime", "perturbation", "LIME: a sparse linear surrogate over patch cells / tokens",
            "Ribeiro, Singh & Guestrin. Why Should I Trust You? KDD 2016",
            baselines="one", features="mask", random=True, whole_text=True,
        ),
        Algorithm("KernelShap", "perturbation", "Kernel SHAP over patch cells / tokens (sampled coalitions)", _SHAP,
                  baselines="one", features="mask", random=True),
        Algorithm("LayerGradCam", "gradient", "Grad-CAM on a block's output", _CAM, layer=True, whole_text=True),
        Algorithm(
            "GuidedGradCam", "gradient", "guided backpropagation times the upsampled Grad-CAM of a block", _CAM,
            layer=True, sides=("image",), rule_modules=_RELU,
        ),
        Algorithm(
            "LayerConductance", "gradient", "conductance of a block's output along the baseline-to-input path",
            "Dhamdhere, Sundararajan & Yan. How Important Is a Neuron? ICLR 2019", layer=True, baselines="one",
        ),
        Algorithm("LayerIntegratedGradients", "gradient", "integrated gradients in a block's output space", _IG,
                  layer=True, baselines="one"),
        Algorithm(
            "InternalInfluence", "gradient", "gradients at a block's output integrated along the input path (L2 norm over channels)",
            "Leino et al. Influence-Directed Explanations for Deep Convolutional Networks. ITC 2018",
            layer=True, baselines="one", reduce="norm",
        ),
        Algorithm("LayerGradientXActivation", "gradient", "a block's output times its gradient", layer=True),
        Algorithm("LayerGradientShap", "gradient", "GradientShap in a block's output space", _SHAP, layer=True,
                  baselines="distribution", random=True),
        Algorithm("LayerDeepLift", "gradient", "DeepLIFT attributions of a block's output", _DL, layer=True,
                  baselines="one", rule_modules=_DEEPLIFT),
        Algorithm("LayerDeepLiftShap", "gradient", "DeepLiftShap attributions of a block's output", _SHAP, layer=True,
                  baselines="distribution", rule_modules=_DEEPLIFT),
        Algorithm("LayerLRP", "gradient", "layer-wise relevance propagation to a block's output", _LRP, layer=True,
                  lrp=True),
        Algorithm("LayerFeatureAblation", "perturbation", "score drop when a position of a block's output is zeroed",
                  layer=True, features="layer_mask"),
        Algorithm("LayerActivation", "activation", "a block's activations summed over channels (no target: the same for every text)",
                  layer=True),
    ]
}  # fmt: skip

_PERMUTES = (
    "permutes each feature across the examples of a batch, so a pair's attribution would depend on the "
    "other pairs (and a single pair gets zero)"
)
#: algorithms of captum.attr that do not explain the pair's score, with the reason
REFUSED: dict[str, str] = {
    "NoiseTunnel": "NoiseTunnel wraps another algorithm: pass smooth=smoothgrad|smoothgrad_sq|vargrad "
    "(with n_samples, stdev) to a gradient method instead",
    "FeaturePermutation": f"FeaturePermutation {_PERMUTES}",
    "LayerFeaturePermutation": f"LayerFeaturePermutation {_PERMUTES}",
    "LimeBase": "LimeBase needs user-written transforms to and from an interpretable space; use captum:Lime",
    "LLMAttribution": "LLMAttribution explains the tokens a language model generates, not an image-text score",
    "LLMGradientAttribution": "LLMGradientAttribution explains the tokens a language model generates, not an image-text score",
    "RemoteLLMAttribution": "RemoteLLMAttribution explains a remote language model's generated tokens, not an image-text score",
    "DataLoaderAttribution": "DataLoaderAttribution attributes a metric over a whole data loader, not one pair's score",
}
#: a prefix of class names that explain one unit of a layer, not the pair's score
NEURON_PREFIX = "Neuron"
NEURON_REASON = "{name} explains one unit of a layer (a neuron_selector), not the image-text score"
#: abstract bases of captum.attr, not algorithms
BASES = (
    "Attribution",
    "GradientAttribution",
    "PerturbationAttribution",
    "LayerAttribution",
    "NeuronAttribution",
    "InternalAttribution",
)


def refusal(name: str) -> str | None:
    """The reason a Captum class name is not an algorithm the bridge runs (None: it is one)."""
    if name in REFUSED:
        return REFUSED[name]
    if name.startswith(NEURON_PREFIX):
        return NEURON_REASON.format(name=name)
    if name in BASES:
        return f"{name} is an abstract base class of Captum, not an algorithm"
    return None
