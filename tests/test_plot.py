from speech_rl.cli import main


def _run(path, values, tag="train/reward/mean"):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(path / "tensorboard"))
    for step, v in enumerate(values):
        w.add_scalar(tag, v, step)
        w.add_scalar("train/kl", 0.01 * step, step)
    w.close()
    return path


def test_plot_writes_a_png_with_one_panel_per_tag(tmp_path, capsys):
    import matplotlib.image

    a = _run(tmp_path / "grpo", [0.1, 0.3, 0.2, 0.5])
    b = _run(tmp_path / "diffro", [0.0, 0.1, 0.4, 0.6])
    out = tmp_path / "fig" / "stability.png"
    assert main(["plot", str(a), f"DiffRO={b}", "--tags", "train/reward/mean,train/kl", "--out", str(out)]) == 0
    img = matplotlib.image.imread(out)
    assert img.shape[0] > img.shape[1] * 0.6 and img.shape[2] in (3, 4)      # two stacked panels
    assert main(["plot", str(a), "--tags", "val/wer", "--out", str(out)]) == 2
    assert "no run logged ['val/wer']; tags present: train/kl, train/reward/mean" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "fig"), "--out", str(out)]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
