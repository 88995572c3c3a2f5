from liquid_s4.demo import main


def test_demo_runs_and_streams(capsys):
    main(["--steps", "3", "--length", "32", "--delay", "4", "--batch", "4"])
    out = capsys.readouterr().out
    assert "test mse" in out
    diff = float(out.split("max |diff| ")[1].split(",")[0])
    assert diff < 1e-4  # the streamed model reproduces the convolutional one
