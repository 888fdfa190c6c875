"""A CSV import of clients: what the background job writes per second.

`settle serve` and one `settle worker`, joined by Redis. The bench uploads a file
of N clients (each with a primary contact) through ``createImport`` and its
signed URL, starts it, and times from ``startImport`` until the import reads
``COMPLETED`` (polled every 50 ms), then imports the same file again (every row
found and skipped: the cost of matching alone).

**Baseline:** the same N clients and contacts made the way a script without the
import would, ``createClient`` then ``createContact`` for each row, one request
after another over one kept-alive connection, against the same server, in the
same run. Both write the same rows through the same services (and the same
timeline events); the ratio is what streaming, batching and the job add or save.

    uv run python bench/csv_import.py [--n 2000] [--batch-size 200]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import time

import httpx
from _common import SIGN_UP, Api, add_service_arguments, print_table, stack, wait_until

DESCRIPTION = "Clients imported from CSV by the job, against createClient per row."

CREATE_IMPORT = """
mutation Create($size: Int!) {
  createImport(input: {entity: CLIENTS, filename: "clients.csv", sizeBytes: $size}) {
    __typename ... on ImportUpload { uploadUrl import { id } }
  }
}
"""
START_IMPORT = """
mutation Start($id: ID!) { startImport(id: $id) { __typename } }
"""
IMPORT = """
query Import($id: ID!) { import(id: $id) { status processed created skipped failed } }
"""
CREATE_CLIENT = """
mutation Client($input: CreateClientInput!) {
  createClient(input: $input) { __typename ... on Client { id } }
}
"""
CREATE_CONTACT = """
mutation Contact($input: CreateContactInput!) {
  createContact(input: $input) { __typename }
}
"""


def clients_file(n: int, prefix: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["name", "email", "currency", "external_id", "contact_name", "contact_email"])
    for i in range(n):
        writer.writerow(
            [
                f"{prefix} Client {i}",
                f"billing{i}@{prefix.lower()}.example",
                "USD",
                f"{prefix}-{i}",
                f"Contact {i}",
                f"contact{i}@{prefix.lower()}.example",
            ]
        )
    return out.getvalue().encode()


async def import_file(api: Api, http: httpx.AsyncClient, body: bytes) -> tuple[float, dict]:
    """Upload and start an import; seconds from start to completed, and its counts."""
    created = (await api.execute(CREATE_IMPORT, {"size": len(body)}))["createImport"]
    response = await http.put(created["uploadUrl"], content=body)
    if response.status_code != 200:
        raise SystemExit(f"the upload answered {response.status_code}: {response.text}")
    import_id = created["import"]["id"]
    started = time.perf_counter()
    answer = (await api.execute(START_IMPORT, {"id": import_id}))["startImport"]
    if answer["__typename"] != "Import":
        raise SystemExit(f"startImport answered {answer}")
    result: dict = {}

    async def finished() -> bool:
        result.update((await api.execute(IMPORT, {"id": import_id}))["import"])
        if result["status"] == "FAILED":
            raise SystemExit(f"the import failed: {result}")
        return bool(result["status"] == "COMPLETED")

    await wait_until(finished, "the import", timeout=600)
    return time.perf_counter() - started, result


async def one_by_one(api: Api, n: int, prefix: str) -> float:
    """createClient and createContact for each row, one request at a time; seconds."""
    started = time.perf_counter()
    for i in range(n):
        client = await api.execute(
            CREATE_CLIENT,
            {
                "input": {
                    "name": f"{prefix} Client {i}",
                    "email": f"billing{i}@{prefix.lower()}.example",
                    "currency": "USD",
                    "externalId": f"{prefix}-{i}",
                }
            },
        )
        client_id = client["createClient"]["id"]
        await api.execute(
            CREATE_CONTACT,
            {
                "input": {
                    "clientId": client_id,
                    "name": f"Contact {i}",
                    "email": f"contact{i}@{prefix.lower()}.example",
                    "isPrimary": True,
                }
            },
        )
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    async with stack(args.postgres_url, args.redis_url) as running:
        running.spawn(
            "worker",
            ["-m", "settle", "worker", "--threads", "2"],
            extra_env={"SETTLE_IMPORT_BATCH_SIZE": str(args.batch_size)},
        )
        async with httpx.AsyncClient(base_url=running.base_url, timeout=120) as http:
            api = Api(http)
            api.token = (await api.execute(SIGN_UP))["signUp"]["token"]
            # Warm up both paths (connections, pools, the worker's first job).
            await import_file(api, http, clients_file(10, "Warm"))
            await one_by_one(api, 10, "Warmer")

            print(f"importing {args.n} clients with contacts ...", flush=True)
            body = clients_file(args.n, "Imported")
            first, counts = await import_file(api, http, body)
            if counts["created"] != args.n:
                raise SystemExit(f"the import created {counts}")
            again, counts = await import_file(api, http, body)
            if counts["skipped"] != args.n:
                raise SystemExit(f"the second import did not skip every row: {counts}")
            print(f"creating {args.n} clients with contacts one request at a time ...", flush=True)
            baseline = await one_by_one(api, args.n, "Scripted")

    def rate(seconds: float) -> str:
        return f"{args.n / seconds:.0f} rows/s"

    print_table(
        f"{args.n} clients with a primary contact each ({len(body):,} bytes), "
        f"batches of {args.batch_size}",
        ["", "time", "rate", "vs baseline"],
        [
            [
                "baseline: createClient + createContact",
                f"{baseline:.2f} s",
                rate(baseline),
                "1.00x",
            ],
            ["import (new rows)", f"{first:.2f} s", rate(first), f"{baseline / first:.2f}x"],
            [
                "import again (all skipped)",
                f"{again:.2f} s",
                rate(again),
                f"{baseline / again:.2f}x",
            ],
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--n", type=int, default=2000, help="rows in the file (default 2000)")
    parser.add_argument(
        "--batch-size", type=int, default=200, help="SETTLE_IMPORT_BATCH_SIZE (default 200)"
    )
    add_service_arguments(parser)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
