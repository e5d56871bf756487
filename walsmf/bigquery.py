"""The extraction query on BigQuery, through google-cloud-bigquery: the rows, or one line saying what to fix."""
from walsmf.errors import DataError, first_line
from walsmf.memory import check_fits_in_memory


def run_bigquery(sql: str, project: str, client=None):
    """Run ``sql`` on BigQuery as ``project``; return the rows as a DataFrame.

    Credentials come from the environment as google-cloud-bigquery finds
    them.  Failures become one-line DataErrors that say what to do.
    """
    from google.api_core import exceptions as api_errors
    from google.auth import exceptions as auth_errors
    from google.cloud import bigquery

    try:
        client = client or bigquery.Client(project=project)
        rows = client.query(sql).result()
        check_fits_in_memory(rows.total_rows or 0)
        return rows.to_dataframe(create_bqstorage_client=False)
    except auth_errors.DefaultCredentialsError:
        raise DataError("no Google credentials for BigQuery project {!r}: run "
                        "'gcloud auth application-default login' or set "
                        "GOOGLE_APPLICATION_CREDENTIALS".format(project))
    except api_errors.NotFound as err:
        raise DataError("BigQuery project {!r}: not found: {} (check --project and --table)".format(
            project, first_line(err.message)))
    except api_errors.Forbidden as err:
        raise DataError("BigQuery project {!r}: access denied: {} (check the account's "
                        "BigQuery roles and that billing is enabled)".format(project, first_line(err.message)))
    except api_errors.GoogleAPICallError as err:
        raise DataError("BigQuery project {!r}: query failed: {}".format(project, first_line(err.message)))
