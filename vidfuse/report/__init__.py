"""Results that are honest and easy to read: tables over runs, curves, confusion matrices, significance tests.

    results_table(run_dirs)      rows over run folders / Tune experiments, with mean ± std over splits
    markdown_table, csv_table    format any rows with a tuple of `Column`s (RESULT_COLUMNS by default)
    write_tables(rows, out_dir)  `<stem>.csv` and `<stem>.md`, atomically
    compare_to_baseline          McNemar exact test + bootstrap interval against a baseline run
"""

from vidfuse.report.compare import COMPARISON_COLUMNS, compare_to_baseline, comparison_sentences
from vidfuse.report.tables import RESULT_COLUMNS, Column, csv_table, markdown_table, results_table, write_tables

__all__ = [
    "COMPARISON_COLUMNS", "RESULT_COLUMNS", "Column", "compare_to_baseline", "comparison_sentences", "csv_table",
    "markdown_table", "results_table", "write_tables",
]
