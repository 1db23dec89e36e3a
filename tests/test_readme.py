"""The README's Python example must run as written (on a tiny generated MVTec folder instead of a bottle)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(mvtec_folder, tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "create_model" in block)  # the library example (not the edge one)
    code = code.replace('"path/to/bottle"', repr(str(mvtec_folder))).replace('"bottle.vad"', repr(str(tmp_path / "b.vad")))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'image_auroc': 1.0" in printed and "pixel_aupro" in printed
    assert (tmp_path / "b.vad").is_file()


def test_readme_first_screen_gives_exactly_the_two_make_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
