#!/usr/bin/env python3
"""A loopback SMTP server for dc-host's e-mail channel tests (tests/e2e/email.rs).

Runs aiosmtpd on 127.0.0.1 (a free port) with TLS from --cert/--key: STARTTLS
is required before MAIL, or with --implicit-tls the connection is TLS from the
first byte (smtps). AUTH (PLAIN, LOGIN) is required and accepts --user with
--password; with --refuse-auth it refuses every login.

It tells the test what happens as JSON lines on stdout, flushed at once:
  {"event": "listening", "port": N}
  {"event": "auth", "mechanism": "...", "login": "...", "accepted": bool, "tls": bool}
  {"event": "message", "mail_from": "...", "rcpt_tos": [...], "login": "...",
   "tls": bool, "headers": {"From": "...", ...}, "body": "..."}
Headers and body are decoded (RFC 2047 words, quoted-printable, base64).
It exits when its stdin closes, so it never outlives the test.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import socket
import ssl
import sys
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def over_tls(server):
    """Whether the connection is encrypted now (after STARTTLS, or from the start)."""
    return server.transport is not None and server.transport.get_extra_info("sslcontext") is not None


class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        headers = {name: str(value) for name, value in msg.items()}
        body = msg.get_content().replace("\r\n", "\n") if not msg.is_multipart() else ""
        say(
            {
                "event": "message",
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "login": session.auth_data,
                "tls": over_tls(server),
                "headers": headers,
                "body": body,
            }
        )
        return "250 2.0.0 accepted"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--refuse-auth", action="store_true")
    a = p.parse_args()
    # aiosmtpd warns on stderr about an attribute it sets itself
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # and about AUTH without STARTTLS, which --implicit-tls needs (see below)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            not a.refuse_auth
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == a.user.encode()
            and auth_data.password == a.password.encode()
        )
        login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else None
        say({"event": "auth", "mechanism": mechanism, "login": login, "accepted": ok, "tls": over_tls(server)})
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def factory():
        return SMTP(
            Handler(),
            hostname="localhost",
            tls_context=None if a.implicit_tls else ctx,
            require_starttls=not a.implicit_tls,
            auth_required=True,
            # aiosmtpd knows TLS only from STARTTLS; with --implicit-tls every
            # connection is TLS from the first byte, so AUTH is never in clear
            auth_require_tls=not a.implicit_tls,
            authenticator=authenticator,
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(factory, sock=sock, ssl=ctx if a.implicit_tls else None))

    def exit_on_stdin_eof():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    say({"event": "listening", "port": sock.getsockname()[1]})
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
