"""Reports: Markdown / HTML tables of probe metrics beside the published numbers, curves and plots."""
from ssl_eq.reports.contact_sheet import contact_sheet

__all__ = ["contact_sheet", "write_report"]


def write_report(*args, **kwargs):
    """See `ssl_eq.reports.report.write_report` (imported lazily: it pulls in matplotlib and tensorboard)."""
    from ssl_eq.reports.report import write_report as _write_report

    return _write_report(*args, **kwargs)
