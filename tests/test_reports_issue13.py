"""Reports that read right (issue 13, items 10-11): one SIDE column, metric bars that show SIDE
and MAD, titles that do not overlap, loss curves from one logged point, figure rows labelled by
the spec the user gave, and numbers from too few detections marked everywhere."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from evaluate.records import Record  # noqa: E402
from reports import figures as F  # noqa: E402
from reports.tables import ablation_table, summary_table  # noqa: E402

RANDPROJ = "synth [randproj features, not Inception]"


def _demo_like() -> list[Record]:
    """What the demo writes: SIDE/MAD measured on 'synth' for DIGAN, n/a (no data set) for the teacher."""
    recs = []
    for m, v in (("digan", 1.0), ("teacher", 2.0)):
        recs.append(Record(m, "fid", value=0.28 * v, dataset=RANDPROJ, higher_is_better=False))
        recs.append(Record(m, "kid", value=0.0028 * v, dataset=RANDPROJ, higher_is_better=False))
    recs += [Record("digan", "side", value=0.01379, dataset="synth", higher_is_better=False),
             Record("digan", "mad", value=40.11, dataset="synth", unit="deg", higher_is_better=False),
             Record("teacher", "side", status="n/a", reason="2D GAN: cannot recover the 3D shape of an image"),
             Record("teacher", "mad", status="n/a", reason="2D GAN: cannot recover the 3D shape of an image"),
             Record("digan", "side", variant="no_flip", value=0.0150, dataset="synth", higher_is_better=False),
             Record("digan", "mad", variant="no_flip", value=41.0, dataset="synth", unit="deg", higher_is_better=False)]
    return recs


def test_one_side_and_mad_column_per_table():
    recs = _demo_like()
    for t in (summary_table(recs), ablation_table(recs)):
        side = [c for c in t.columns if c.metric == "side"]
        mad = [c for c in t.columns if c.metric == "mad"]
        assert len(side) == 1 and len(mad) == 1, [c.label for c in t.columns]
    t = summary_table(recs)
    md = t.to_markdown()
    rows = {r: i for i, r in enumerate(t.rows)}
    j = next(j for j, c in enumerate(t.columns) if c.metric == "side")
    teacher_row = next(r for r in t.rows if "DIGAN" not in r)
    assert t.cells.iloc[rows[teacher_row], j].status == "n/a"
    assert t.cells.iloc[rows[next(r for r in t.rows if r.startswith("DIGAN"))], j].value == pytest.approx(0.01379)
    assert "1.379" in md


def _panel(fig, prefix: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(prefix))


def test_metric_bars_show_side_mad_and_titles_do_not_overlap():
    fig = F.metric_bars_figure(_demo_like())
    side = _panel(fig, "SIDE")
    widths = [p.get_width() for p in side.patches]
    assert sorted(widths)[-2:] == pytest.approx([1.379, 1.5], rel=1e-3)  # DIGAN and its ablation: not "n/a" for everyone
    texts = [t.get_text() for t in side.texts]
    assert texts.count(" n/a") == 1  # the teacher only
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(ax.title.get_window_extent(renderer), ax.get_title()) for ax in fig.axes if ax.get_title()]
    for i, (a, ta) in enumerate(boxes):
        for b, tb in boxes[i + 1:]:
            assert not a.overlaps(b), f"titles overlap: {ta!r} / {tb!r}"
    assert all(len(line) <= 30 for _, t in boxes for line in t.splitlines())
    matplotlib.pyplot.close(fig)


def test_warned_numbers_are_marked_in_tables_and_figures():
    reason = "only 1 of 320 views had a detected face (0% < 50%, set by min_detection_rate): too few to be a result"
    recs = [Record("digan", "pose", value=5.5, unit="deg", higher_is_better=False, stats={"std": 1.0}),
            Record("liftgan", "pose", value=0.5, unit="deg", higher_is_better=False, status="warn", reason=reason,
                   stats={"std": 0.0})]
    t = summary_table(recs)
    md = t.to_markdown()
    lift = next(line for line in md.splitlines() if "LiftGAN" in line or "liftgan" in line)
    assert "0.5 ± 0.0<sup>†a</sup>" in lift.replace("**", "") and "**" not in lift  # marked, and never "best"
    assert "† not a reliable result: only 1 of 320 views" in md
    assert "$^{\\dagger a}$" in t.to_latex() and 'class="warn"' in t.to_html()
    # with a single valid number there is no best: the warned one does not count
    assert not any(c.best for c in t.cells.values.ravel())
    fig = F.metric_bars_figure(recs)
    ax = _panel(fig, "Pose")
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1 and hatched[0].get_width() == pytest.approx(0.5)
    assert any("few detections" in x.get_text() for x in ax.texts)
    matplotlib.pyplot.close(fig)


def test_loss_curves_with_one_point_and_partial_columns(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "losses.csv").write_text("step,rec,flip\n20,0.31,0.4\n")
    (b / "losses.csv").write_text("step,rec\n" + "".join(f"{i},{1 / (i + 1)}\n" for i in range(0, 200, 10)))
    fig = F.loss_curves_figure([a, b])
    rec = _panel(fig, "rec")
    one = [ln for ln in rec.lines if len(ln.get_xdata()) == 1]
    assert one and one[0].get_marker() == "o"  # a single logged value is drawn as a point
    assert [t.get_text() for t in rec.get_legend().get_texts()] == ["a", "b"]
    flip = _panel(fig, "flip")
    assert flip.get_legend() is None  # only run a logged 'flip': no legend listing an invisible line
    matplotlib.pyplot.close(fig)


def test_model_figure_rows_are_labelled_by_spec():
    from reports.report import figure_labels

    specs = ["digan:runs/a/student.pt", "digan:runs/b/best.pt", "liftgan"]
    keys = [("digan", "full"), ("digan", "full"), ("liftgan", "full")]
    labels = figure_labels(specs, keys)
    assert labels[0] == "digan:student" and labels[1] == "digan:best" and len(set(labels)) == 3
    assert "digan" not in labels[2].lower()
    # same file names: the whole spec
    assert figure_labels(["digan:a/student.pt", "digan:b/student.pt"], keys[:2]) == ["digan:a/student.pt", "digan:b/student.pt"]
    assert figure_labels(["digan"], keys[:1]) == ["DIGAN (ours)"]
