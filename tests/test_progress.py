"""Log lines (reltune.progress.log) reach stderr whole and as written."""

from reltune.progress import log


def test_a_long_log_line_stays_one_line_and_brackets_are_not_markup(capsys):
    message = "copy replay: 1400 'Repeat the words' questions (triplet-no-converse phrases) over 120 dataset names [held-in] " * 2
    log(message.strip())
    assert capsys.readouterr().err == message.strip() + "\n"
