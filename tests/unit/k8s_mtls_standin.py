#!/usr/bin/python3
"""k8s_mtls_standin.py: tests/fixtures/k8s_standin.py with client certificates.

Test helper, not a lab stand-in. The lab's Kubernetes stand-in only knows
bearer tokens; kube-apiserver also authenticates clients by certificate
(--client-ca-file): the TLS handshake asks for a certificate, one signed by
that CA authenticates the request (its CN is the user name), and a request
without one falls back to the bearer token. This wraps the stand-in to do
the same, so the client certificate forms of a kubeconfig can be tested:

  k8s_mtls_standin.py --client-ca CA.pem <every k8s_standin.py option>

Everything else (paths, objects, errors, faults) is the stand-in's.
"""

import os
import ssl
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import k8s_standin  # noqa: E402
import lab_http  # noqa: E402


def main():
    args = sys.argv[1:]
    if "--client-ca" not in args:
        sys.exit("usage: k8s_mtls_standin.py --client-ca CA.pem [k8s_standin.py options]")
    i = args.index("--client-ca")
    ca = args[i + 1]
    sys.argv = [sys.argv[0]] + args[:i] + args[i + 2:]

    plain_context = lab_http.tls_context

    def tls_context(cert, key):
        ctx = plain_context(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate, if sent, must verify
        return ctx

    token_auth = k8s_standin.K8sHandler.authorized

    def authorized(self):
        if lab_http.read_fault(self.fault_file) == "401":
            return False
        peer = self.connection.getpeercert()
        if peer:
            return True
        return token_auth(self)

    lab_http.tls_context = tls_context
    k8s_standin.K8sHandler.authorized = authorized
    k8s_standin.main()


if __name__ == "__main__":
    main()
