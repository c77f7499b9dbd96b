"""A small SMTP server on 127.0.0.1 for tests: EHLO, STARTTLS (a self-signed certificate made
with `cryptography`), AUTH PLAIN and LOGIN, MAIL, RCPT, DATA. It keeps each message with
whether it came over TLS and who logged in, so a test sees what the sender really did."""

from __future__ import annotations

import base64
import datetime as dt
import socketserver
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Received:
    text: str
    tls: bool
    user: str | None


@dataclass
class MailServer:
    port: int
    messages: list[Received] = field(default_factory=list)
    server: socketserver.ThreadingTCPServer | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _self_signed(folder: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def start(login: str, password: str) -> MailServer:
    """Serve until `stop()`; only `login`/`password` may authenticate."""
    tls_context = _self_signed(Path(tempfile.mkdtemp(prefix="smtp-")))
    box = MailServer(port=0)

    class Handler(socketserver.StreamRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.tls, self.user = False, None

        def say(self, line: str) -> None:
            self.wfile.write(line.encode() + b"\r\n")
            self.wfile.flush()

        def read(self) -> str:
            return self.rfile.readline().decode().rstrip("\r\n")

        def starttls(self) -> None:
            self.say("220 go ahead")
            self.connection = tls_context.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb")
            self.tls = True

        def auth(self, args: list[str]) -> None:
            if args[0].upper() == "PLAIN":
                blob = args[1] if len(args) > 1 else (self.say("334 "), self.read())[1]
                _, user, secret = base64.b64decode(blob).decode().split("\0")
            else:  # LOGIN
                self.say("334 VXNlcm5hbWU6")
                user = base64.b64decode(self.read()).decode()
                self.say("334 UGFzc3dvcmQ6")
                secret = base64.b64decode(self.read()).decode()
            if (user, secret) == (login, password):
                self.user = user
                self.say("235 ok")
            else:
                self.say("535 bad credentials")

        def handle(self) -> None:
            self.say("220 test ESMTP")
            while line := self.read():
                verb, *args = line.split(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    extras = ["250-AUTH PLAIN LOGIN"] if self.tls else ["250-STARTTLS"]
                    for extra in ["250-test", *extras]:
                        self.say(extra)
                    self.say("250 OK")
                elif verb == "STARTTLS":
                    self.starttls()
                elif verb == "AUTH":
                    self.auth(args)
                elif verb == "DATA":
                    self.say("354 end with .")
                    lines = []
                    while (data := self.read()) != ".":
                        lines.append(data)
                    box.messages.append(Received("\n".join(lines), self.tls, self.user))
                    self.say("250 queued")
                elif verb == "QUIT":
                    self.say("221 bye")
                    return
                else:
                    self.say("250 ok")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box.server, box.port = server, server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return box
