import logging

from components.log import LOG, show_logs


def test_log_lines_reach_the_current_stderr_once_with_the_pogona_prefix(capsys):
    show_logs()
    show_logs()  # an entry point called twice (kfp.local runs several steps in one process) adds no second copy
    LOG.info("synced 3 files")
    LOG.debug("not shown at the default level")
    assert capsys.readouterr().err == "pogona: synced 3 files\n"


def test_a_lower_level_shows_debug_lines(capsys):
    show_logs(logging.DEBUG)
    try:
        LOG.debug("part 2 of 7")
        assert capsys.readouterr().err == "pogona: part 2 of 7\n"
    finally:
        show_logs()
