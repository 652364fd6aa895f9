"""Blob trigger (Event Grid source): a new blob in the datasets container → intake."""
import azure.functions as func
from azurefunctions.extensions.bindings import blob

bp = func.Blueprint()


# The SDK-type binding hands us a BlobClient, so the dataset is streamed, never loaded whole.
@bp.blob_trigger(arg_name="client", path="%DATASETS_CONTAINER%/{name}", connection="DatasetStorage",
                 source=func.BlobSource.EVENT_GRID)
def intake(client: blob.BlobClient) -> None:
    from shared.app.bootstrap import get_deps  # at the first blob, not when the app loads (cold start)
    from shared.stages.intake import handle_blob_created
    handle_blob_created(client.blob_name, get_deps())
