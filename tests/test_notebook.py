"""alexnet_lib.notebook: the QUICK switch and glue (myst-nb's format, without myst-nb)."""

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from alexnet_lib.notebook import glue, pick


@pytest.fixture(autouse=True)
def shell():  # display() publishes only inside an IPython shell, as in a kernel
    return InteractiveShell.instance()


def test_glue_writes_mystnb_record():
    with capture_output() as cap:
        assert glue("claim_x", "1.5 ± 0.2 (3 seeds)") == "1.5 ± 0.2 (3 seeds)"
    (out,) = cap.outputs
    assert out.data == {"application/papermill.record/text/plain": "'1.5 ± 0.2 (3 seeds)'"}
    assert out.metadata["scrapbook"] == {"name": "claim_x", "mime_prefix": "application/papermill.record/"}


def test_glue_display_and_bad_name():
    with capture_output() as cap:
        glue("shown", 3, display=True)
    assert cap.outputs[0].data == {"text/plain": "3"}
    with pytest.raises(ValueError, match="name"):
        glue("not a name", 1)


def test_pick_full_mode(monkeypatch):
    import alexnet_lib.notebook as nb

    monkeypatch.setattr(nb, "QUICK", False)
    assert pick(10, 1) == 10


def test_read_glue_round_trip(tmp_path):
    import json

    from alexnet_lib.notebook import read_glue

    with capture_output() as cap:
        glue("claim_a", "+1.2 ± 0.3 points (3 seeds)")
        glue("n", 7)
    outputs = [dict(output_type="display_data", data=o.data, metadata=o.metadata) for o in cap.outputs]
    nb = tmp_path / "x.ipynb"
    nb.write_text(json.dumps(dict(cells=[dict(cell_type="code", outputs=outputs, source="")])))
    assert read_glue(nb) == {"claim_a": "+1.2 ± 0.3 points (3 seeds)", "n": "7"}
