#!/usr/bin/env python3
"""A read-only Docker registry on loopback, serving one image from a `docker save` archive, so
the docker provisioner's pull (and its progress in the build log) is tested with no registry on
the internet. Speaks just enough of the registry API v2 for `docker pull`: /v2/, manifests by
tag or digest (OCI manifest, uncompressed layers), blobs by digest.

usage: registry.py SAVED_TAR NAME TAG  (prints the port it listens on, then serves until killed)
"""
import hashlib
import http.server
import json
import os
import sys
import tarfile
import tempfile

saved, name, tag = sys.argv[1], sys.argv[2], sys.argv[3]
work = tempfile.mkdtemp(prefix="outpost-registry-")
with tarfile.open(saved) as t:
    t.extractall(work)
entry = json.load(open(os.path.join(work, "manifest.json")))[0]

blobs = {}  # digest -> (path, size)


def add(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    d = "sha256:" + h.hexdigest()
    blobs[d] = (path, os.path.getsize(path))
    return d, os.path.getsize(path)


layers = []
for layer in entry["Layers"]:
    d, size = add(os.path.join(work, layer))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size})

# One more layer that no local image has (a file /etc/outpost-pulled), so a pull downloads
# something and the image is new to the engine.
extra = os.path.join(work, "extra-layer.tar")
with tarfile.open(extra, "w") as t:
    body = f"{name}:{tag}\n".encode()
    info = tarfile.TarInfo("etc/outpost-pulled")
    info.size = len(body)
    info.mode = 0o644
    import io
    t.addfile(info, io.BytesIO(body))
d, size = add(extra)
layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": size})
config = json.load(open(os.path.join(work, entry["Config"])))
config["rootfs"]["diff_ids"].append(d)
config.setdefault("history", []).append({"created_by": "outpost test registry: /etc/outpost-pulled"})
config_path = os.path.join(work, "config.json")
with open(config_path, "w") as f:
    json.dump(config, f)
cdigest, csize = add(config_path)
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest, "size": csize},
    "layers": layers,
}).encode()
mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", ctype="application/json", extra=None, head=False):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def route(self, head):
        p = self.path.split("?")[0]
        if p in ("/v2", "/v2/"):
            return self.send(200, b"{}", head=head)
        if p in (f"/v2/{name}/manifests/{tag}", f"/v2/{name}/manifests/{mdigest}"):
            return self.send(200, manifest, "application/vnd.oci.image.manifest.v1+json",
                             {"Docker-Content-Digest": mdigest}, head)
        prefix = f"/v2/{name}/blobs/"
        if p.startswith(prefix) and p[len(prefix):] in blobs:
            path, size = blobs[p[len(prefix):]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Docker-Content-Digest", p[len(prefix):])
            self.end_headers()
            if not head:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        self.wfile.write(chunk)
            return None
        return self.send(404, json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": p}]}).encode(), head=head)

    def do_GET(self):
        self.route(False)

    def do_HEAD(self):
        self.route(True)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
