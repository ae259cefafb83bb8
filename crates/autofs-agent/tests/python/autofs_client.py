#!/usr/bin/env python3
"""A Python grpcio client of autofs-inspector: proof that the API works from another language.

Stubs are generated from the repository's proto/ with grpc_tools.protoc into a temporary
directory at run time (nothing generated is checked in). Against one agent address it

  1. streams autofs.v1.AutofsInspector/ListMounts (optionally filtered by --mnt-ns, and by
     --state, repeatable),
  2. calls grpc.health.v1.Health/Check for "" and "autofs.v1.AutofsInspector",
  3. lists the services through server reflection (grpcio-reflection speaks only v1alpha),

and prints one JSON document on stdout:

  {"reports": [MountReport as proto3 JSON, snake_case field names, enums by name],
   "health": {"": "SERVING", "autofs.v1.AutofsInspector": "SERVING"},
   "services": ["autofs.v1.AutofsInspector", "grpc.health.v1.Health", ...]}

Any RPC failure prints the gRPC status on stderr and exits 1; usage errors exit 2.

    target/tools/venv/bin/python crates/autofs-agent/tests/python/autofs_client.py \
        --address 127.0.0.1:50051 [--mnt-ns 4026531841] [--proto-dir proto]
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

SERVICE = "autofs.v1.AutofsInspector"
PROTOS = ("autofs/v1/autofs.proto", "criu/autofs.proto")
RPC_TIMEOUT_S = 30.0


def default_proto_dir() -> Path:
    # crates/autofs-agent/tests/python/autofs_client.py -> repository root / proto
    return Path(__file__).resolve().parents[4] / "proto"


def generate_stubs(proto_dir: Path, out_dir: Path):
    """Runs protoc (the one bundled in grpcio-tools) and imports the generated modules."""
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(proto_dir / p) for p in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {proto_dir}")
    sys.path.insert(0, str(out_dir))
    pb2 = importlib.import_module("autofs.v1.autofs_pb2")
    pb2_grpc = importlib.import_module("autofs.v1.autofs_pb2_grpc")
    return pb2, pb2_grpc


def list_mounts(channel, pb2, pb2_grpc, mnt_ns, states):
    stub = pb2_grpc.AutofsInspectorStub(channel)
    request = pb2.ListMountsRequest()
    if mnt_ns is not None:
        request.mnt_ns = mnt_ns
    for state in states:
        request.states.append(pb2.MountState.Value(state))
    reports = []
    for report in stub.ListMounts(request, timeout=RPC_TIMEOUT_S):
        reports.append(
            json_format.MessageToDict(
                report,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        )
    return reports


def health(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for service in ("", SERVICE):
        response = stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S
        )
        result[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(
            response.status
        )
    return result


def reflected_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    services = []
    for response in stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT_S):
        if response.HasField("error_response"):
            err = response.error_response
            raise RuntimeError(
                f"reflection error {err.error_code}: {err.error_message}"
            )
        services.extend(s.name for s in response.list_services_response.service)
    return sorted(services)


def wait_migratable(channel, pb2, pb2_grpc, pid):
    """Every message of a WaitMigratable stream for `pid`, and how the stream ended."""
    stub = pb2_grpc.AutofsInspectorStub(channel)
    messages = []
    status = "OK"
    try:
        for message in stub.WaitMigratable(
            pb2.WaitMigratableRequest(pid=pid), timeout=RPC_TIMEOUT_S
        ):
            messages.append(
                json_format.MessageToDict(message, preserving_proto_field_name=True)
            )
    except grpc.RpcError as e:
        status = e.code().name
    return {"messages": messages, "status": status}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of the agent (plaintext)")
    parser.add_argument("--mnt-ns", type=int, help="only this mount namespace inode")
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        help="only this state (e.g. MOUNT_STATE_INTERIM); repeatable",
    )
    parser.add_argument("--proto-dir", type=Path, default=default_proto_dir())
    parser.add_argument("--wait-pid", type=int, help="also WaitMigratable for this pid")
    return parser.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    if not (args.proto_dir / PROTOS[0]).is_file():
        print(f"autofs_client: no {PROTOS[0]} under {args.proto_dir}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="autofs-pystubs-") as out_dir:
        try:
            pb2, pb2_grpc = generate_stubs(args.proto_dir, Path(out_dir))
            with grpc.insecure_channel(args.address) as channel:
                document = {
                    "reports": list_mounts(channel, pb2, pb2_grpc, args.mnt_ns, args.state),
                    "health": health(channel),
                    "services": reflected_services(channel),
                }
                if args.wait_pid is not None:
                    document["wait"] = wait_migratable(channel, pb2, pb2_grpc, args.wait_pid)
        except grpc.RpcError as e:
            print(f"autofs_client: RPC failed: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        except (RuntimeError, ValueError) as e:
            print(f"autofs_client: {e}", file=sys.stderr)
            return 1
    json.dump(document, sys.stdout, indent=None, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
