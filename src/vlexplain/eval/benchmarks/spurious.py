"""``benchmark spurious``: do explanations reveal a shortcut the model really uses?

Held-out shapes-world scenes are rendered in three groups from the same seeds
(``render_cue_scene``): *aligned* (the main object's category
badge), *absent* (no badge) and *conflicting* (another category's badge). Each is queried with
its main object's category caption. Every method explains every pair on two models side by side:
``testbed:spurious`` (trained with the badge, ``vlexplain.testbeds.spurious``) and
``testbed:shapes`` (never saw a badge). Per model, each pair's true reliance on the badge is the
model's score with the badge minus its score on the same scene without it.

The benchmark directory holds ``data/`` (PNG images, object masks, badge masks and one pairs file
per model, with the ``cue_mask`` and ``reliance`` columns), ``run_<model>/`` (evaluation runs),
their HTML reports and ``leaderboard.md``: a leaderboard per model (the format of the other
benchmarks), the difference between the two models with paired bootstrap intervals, and the cue
share per group.

Example:
    >>> run_spurious_benchmark("bench/spurious", n=16)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .base import SEED_STRIDE, _check_options, _save_mask, _write_jsonl, applicable_methods, leaderboard_markdown
from .registry import Benchmark, register_benchmark
from .spurious_headline import headline, undefined_pairs

#: first scene seed (held out: below the training seeds, apart from the other benchmarks' and the
#: class datasets' seeds)
SPURIOUS_SEED_BASE = 9_000_000
DEFAULT_N = 24  # scenes per group
MODELS = {"spurious": "testbed:spurious", "shapes": "testbed:shapes"}
DEFAULT_METRICS = [
    "cue_reliance_rank_within",
    "cue_reliance_rank",
    "cue_share",
    "cue_pointing",
    "energy_pointing_game",
    "pointing_game",
    "auroc",
]
PRIMARY = "cue_reliance_rank_within"
GROUPS = ("aligned", "absent", "conflicting")


@dataclass
class SpuriousResult:
    """What ``run_spurious_benchmark`` produced."""

    out: Path
    leaderboard: Path
    markdown: str
    runs: dict[str, Path]
    reliance: dict[str, dict[str, float]]  # model tag -> group -> mean true reliance
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def reports(self) -> list[Path]:
        """The HTML reports, one per model."""
        return [r / "report.html" for r in self.runs.values()]


def spurious_seeds(n: int, seed: int = 0) -> list[int]:
    """Scene seeds of the benchmark (the same in every group)."""
    if not 1 <= n <= SEED_STRIDE:
        raise InputError(f"--n must be between 1 and {SEED_STRIDE} scenes per group, got {n}")
    if not 0 <= seed < 10:
        raise InputError(f"benchmark seed must be between 0 and 9, got {seed}")
    first = SPURIOUS_SEED_BASE + SEED_STRIDE * seed
    return [first + i for i in range(n)]


def make_spurious_data(
    out_dir: str | os.PathLike, models: dict[str, Any], n: int, seed: int = 0, size: int = 64
) -> dict[str, Path]:
    """Render the three groups and write one pairs file per model (with its true reliance).

    Returns:
        Model tag -> its JSONL file (``image``, ``caption``, ``mask``, ``cue_mask``, ``reliance``,
        ``group``, ``scene_seed``, ``category``, ``badge``).
    """
    from ...testbeds.shapes_categories import category_caption
    from ...testbeds.shapes_cue import main_object, render_cue_scene
    from ...testbeds.spurious import GROUP_BADGE, reliance

    d = Path(out_dir)
    for sub in ("images", "masks", "cue_masks"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with_cue, without, caps, badged = [], [], [], []
    seeds = spurious_seeds(n, seed)
    plain = {s: render_cue_scene(s, "none", size=size) for s in seeds}
    for g in GROUPS:
        for i, s in enumerate(seeds):
            scene = render_cue_scene(s, GROUP_BADGE[g], size=size) if g != "absent" else plain[s]
            obj = main_object(scene)
            cap = category_caption(scene.objects[obj].category)
            img, msk = f"images/{g}_{i:05d}.png", f"masks/{g}_{i:05d}.png"
            scene.pil().save(d / img)
            _save_mask(scene.text_masks()[cap], d / msk)
            row: dict[str, Any] = {
                "image": img,
                "caption": cap,
                "mask": msk,
                "group": g,
                "scene_seed": s,
                "category": scene.objects[obj].category,
                "badge": scene.badge.category if scene.badge else "",
            }
            if scene.badge is not None:
                row["cue_mask"] = f"cue_masks/{g}_{i:05d}.png"
                _save_mask(scene.badge_mask, d / row["cue_mask"])
                badged.append(len(rows))
                with_cue.append(scene)
                without.append(plain[s])
                caps.append(cap)
            rows.append(row)
    out = {}
    for tag, model in models.items():
        rel = reliance(model, with_cue, without, caps)
        mine = [dict(r) for r in rows]
        for k, j in enumerate(badged):
            mine[j]["reliance"] = float(rel[k])
        out[tag] = _write_jsonl(d / f"pairs_{tag}.jsonl", mine)
    return out


def run_spurious_benchmark(
    out: str | os.PathLike,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    models: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    resume: bool = False,
    method_options: dict[str, dict[str, Any]] | None = None,
    metric_options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SpuriousResult:
    """Every method on the three groups, on the biased and the clean model; leaderboards and differences.

    Args:
        out: the benchmark directory.
        methods: method names (default: every registered one; ``random`` and ``center`` added).
        metrics: metric names (default ``DEFAULT_METRICS``).
        n: scenes per group (default ``DEFAULT_N``).
        models: tag -> model spec or model (default ``MODELS``: ``spurious`` and ``shapes``);
            the difference table compares the first with the second.
        seed: selects the scenes and seeds the explanations.
        batch_size, resume, method_options, metric_options, device, progress, overwrite: as for
            [`run_benchmark`][vlexplain.eval.benchmarks.base.run_benchmark].

    Returns:
        A ``SpuriousResult``.
    """
    from ...models.registry import load_model
    from ...outdir import check_overwrite, claimed, remove_run
    from ...validate import check_number, check_seed
    from ..report import report
    from ..run_config import _resolve_device
    from ..runner import evaluate

    n = int(check_number(DEFAULT_N if n is None else n, "--n", integer=True, lo=1, hi=1_000_000))
    seed = check_seed(seed)
    check_overwrite(resume, overwrite)
    out = Path(out).expanduser()
    specs = dict(models or MODELS)
    if len(specs) < 1:
        raise InputError("give at least one model")
    runs = {t: out / f"run_{t}" for t in specs}
    if any((r / "config.json").exists() for r in runs.values()) and not resume and not overwrite:
        raise InputError(
            f"{out} already holds a benchmark; pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    dev = _resolve_device(device, 1)
    loaded = {t: (load_model(m, device=dev) if isinstance(m, (str, os.PathLike)) else m) for t, m in specs.items()}
    names: list[str] | None = None
    skipped: dict[str, str] = {}
    for m in loaded.values():
        got, sk = applicable_methods(m, methods)
        names = got if names is None else [x for x in names if x in got]
        skipped.update(sk)
    assert names is not None  # at least one model
    mets = list(metrics) if metrics else list(DEFAULT_METRICS)
    for m in loaded.values():
        _check_options(m, names, mets, method_options or {}, metric_options)
    with claimed(out):
        if overwrite:
            remove_run(out, ("data", "leaderboard.md", *(r.name for r in runs.values())))
        files = make_spurious_data(out / "data", loaded, n, seed)
        for t, m in loaded.items():
            evaluate(
                files[t],
                m,
                names,
                mets,
                runs[t],
                batch_size=batch_size,
                resume=resume,
                shard_size=batch_size,
                method_options=method_options,
                metric_options=metric_options,
                seed=seed,
                progress=progress,
            )
            report(runs[t])
        rel = {t: _mean_reliance(files[t]) for t in loaded}
        primary = PRIMARY if PRIMARY in mets else mets[0]
        md = _markdown(loaded, runs, files, names, skipped, method_options, n, seed, primary, rel)
        lb = out / "leaderboard.md"
        lb.write_text(md)
    return SpuriousResult(out, lb, md, runs, rel, skipped)


def _mean_reliance(pairs: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in pairs.read_text().splitlines() if x.strip()]
    return {
        g: float(np.mean([r["reliance"] for r in rows if r["group"] == g]))
        for g in ("aligned", "conflicting")
        if any(r["group"] == g for r in rows)
    }


def _markdown(loaded, runs, files, names, skipped, method_options, n, seed, primary, rel) -> str:
    tags = list(loaded)
    shown = ", ".join(f"`{getattr(m, 'name', m)}`" for m in loaded.values())
    lines = [
        f"## Benchmark `spurious` — models {shown}",
        "",
        f"{n} held-out shapes-world scenes (seeds {spurious_seeds(n, seed)[0]}..) in each of three groups "
        "from the same seeds: aligned (the main object's category badge), absent (no badge), conflicting "
        "(another category's badge); each queried with the main object's category caption. Cue metrics "
        "use the badge's exact mask (pairs with a badge only); object metrics the caption's mask. "
        "Maps are read at their own resolution (patch maps on their grid). "
        "`cue_reliance_rank` is Spearman's rho over pairs between a method's cue share and the model's "
        "true reliance on the badge (score with it minus score without it), pooled over the aligned and "
        "conflicting pairs; `cue_reliance_rank_within` the same within each group, averaged (it does not "
        "reward telling the groups apart); their intervals resample pairs. "
        "`cue_share` / `cue_pointing` have no better direction in general (↓ is nominal): a faithful map "
        "follows the model's reliance, so compare the two models: the headline table does.",
        "",
        f"- methods: {', '.join(names)} (default options unless listed below)",
    ]
    lines += [f"- skipped {m}: {why}" for m, why in skipped.items()]
    lines += [f"- {m} options: {json.dumps(o, sort_keys=True)}" for m, o in (method_options or {}).items()]
    for t in tags:
        r = rel[t]
        lines.append(
            f"- true reliance of `{t}` (mean over pairs, cosine): aligned {r.get('aligned', float('nan')):+.4f}, "
            f"conflicting {r.get('conflicting', float('nan')):+.4f}"
        )
    if len(tags) >= 2:
        lines += headline(runs[tags[0]], runs[tags[1]], tags[0], tags[1], names)
    lines += undefined_pairs(runs, names)
    for t in tags:
        lines += ["", f"### `{t}` (`{getattr(loaded[t], 'name', loaded[t])}`)", ""]
        lines.append(leaderboard_markdown(runs[t], primary).rstrip())
    if len(tags) >= 2:
        lines += [
            "",
            f"### Difference `{tags[0]}` − `{tags[1]}`, every metric (same pairs; paired bootstrap 95 % interval)",
            "",
        ]
        lines += _difference_table(runs[tags[0]], runs[tags[1]], names, primary)
    lines += ["", "### Cue share by group (mean [95 % interval])", ""]
    lines += _group_table(runs, names)
    return "\n".join(lines) + "\n"


def _frame(run: Path) -> Any:
    from .. import io as rio

    return rio.load_results(run).to_pandas()


def _difference_table(run_a: Path, run_b: Path, names: list[str], primary: str) -> list[str]:
    from ...metrics.cue import spearman, spearman_within
    from .. import io as rio
    from ..report import BOOT_SEED, N_BOOT, bootstrap_ci

    cfg = rio.read_json(run_a / rio.CONFIG)
    info = cfg.get("metric_info", {})
    a, b = _frame(run_a), _frame(run_b)
    mets = [m for m in cfg["metrics"]]
    lines = ["| method | " + " | ".join(mets) + " |", "|:---|" + "---:|" * len(mets)]
    rng = np.random.default_rng(BOOT_SEED)
    for meth in names:
        sa = a[a["method"] == meth].set_index("index")
        sb = b[b["method"] == meth].set_index("index")
        common = sa.index.intersection(sb.index).sort_values()  # the same pairs in both runs
        sa, sb = sa.loc[common], sb.loc[common]
        cells = []
        for m in mets:
            if m in ("cue_reliance_rank", "cue_reliance_rank_within"):
                cols = ("cue_share", "reliance") + (("group",) if m.endswith("within") else ())
                xa, ya, *ga = (sa[f"{m}.{c}"].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols)
                xb, yb = (sb[f"{m}.{c}"].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols[:2])

                def rho(x, y, i, g=ga[0] if ga else None):
                    return spearman(x[i], y[i]) if g is None else spearman_within(x[i], y[i], g[i])

                every = np.arange(len(xa))
                d = rho(xa, ya, every) - rho(xb, yb, every)
                idx = rng.integers(0, len(xa), size=(N_BOOT, len(xa)))
                boots = np.array([rho(xa, ya, i) - rho(xb, yb, i) for i in idx])
                boots = boots[~np.isnan(boots)]
                lo, hi = np.percentile(boots, [2.5, 97.5]) if boots.size else (np.nan, np.nan)
            else:
                col = m if m in sa else f"{m}.{info.get(m, {}).get('primary')}"
                if col not in sa or col not in sb:
                    cells.append("–")
                    continue
                diff = sa[col].to_numpy(dtype=np.float64, na_value=np.nan) - sb[col].to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                d, lo, hi = bootstrap_ci(diff)
            cells.append("–" if np.isnan(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    return lines


def _group_table(runs: dict[str, Path], names: list[str]) -> list[str]:
    from .. import io as rio
    from ..report import bootstrap_ci

    cols = [(t, g) for t in runs for g in ("aligned", "conflicting")]
    lines = ["| method | " + " | ".join(f"{t}: {g}" for t, g in cols) + " |", "|:---|" + "---:|" * len(cols)]
    frames = {}
    for t, r in runs.items():
        df = _frame(r)
        pairs = rio.read_json(r / rio.CONFIG)["data"]["path"]
        groups = [json.loads(x)["group"] for x in Path(pairs).read_text().splitlines() if x.strip()]
        df["group"] = [groups[i] for i in df["index"]]
        frames[t] = df
    for meth in names:
        cells = []
        for t, g in cols:
            df = frames[t]
            sub = df[(df["method"] == meth) & (df["group"] == g)]
            if "cue_share" not in sub:
                cells.append("–")
                continue
            mean, lo, hi = bootstrap_ci(sub["cue_share"].to_numpy(dtype=np.float64, na_value=np.nan))
            cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    return lines


def _run(out: str | os.PathLike, *, model: Any = None, **settings: Any) -> SpuriousResult:
    """``benchmark spurious``: ``model`` replaces the biased model (``testbed:spurious``)."""
    return run_spurious_benchmark(out, models={**MODELS, "spurious": model} if model else None, **settings)


register_benchmark(
    Benchmark(
        name="spurious",
        summary="a badge shortcut: scenes with the category's badge, none or another's; testbed:spurious "
        "against testbed:shapes",
        default_model=MODELS["spurious"],
        default_n=DEFAULT_N,
        default_metrics=tuple(DEFAULT_METRICS),
        primary=PRIMARY,
        run=_run,
        model_help="The biased model's spec (default: testbed:spurious); it is compared with testbed:shapes.",
        n_help="scenes per group",
    )
)
