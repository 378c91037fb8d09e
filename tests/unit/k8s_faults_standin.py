#!/usr/bin/python3
"""k8s_faults_standin.py: tests/fixtures/k8s_standin.py with RBAC refusals and conflicts.

Test helper, not a lab stand-in. The lab's stand-in lets its one token do
everything and has no 403 nor injected 409. This wraps it, for the tests of
the Kubernetes actions, with:

  --readonly-token-file F   a second token that may read (GET) but nothing
                            else: other verbs get 403 Forbidden, with the
                            message kube-apiserver's RBAC authorizer gives
  and more values in the stand-in's --fault-file:
    403        every authenticated request is refused with 403 Forbidden
    409        every PATCH fails with 409 Conflict
    409-once   the next PATCH fails with 409 Conflict; the fault file is
               then removed (a concurrent writer that changed the object once)

  k8s_faults_standin.py --readonly-token-file F <every k8s_standin.py option>

Everything else (paths, objects, the other faults) is the stand-in's.
"""

import os
import sys
import threading
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import k8s_standin  # noqa: E402
import lab_http  # noqa: E402

PUBLIC = ("/version", "/healthz", "/readyz", "/livez")
VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}
once_lock = threading.Lock()


def forbidden(handler, user):
    path = urllib.parse.urlsplit(handler.path).path
    m = k8s_standin.PATH_RE.match(path)
    verb = VERBS.get(handler.command, handler.command.lower())
    if m and handler.command == "GET" and not m.group("name"):
        verb = "list"
    if m:
        res = m.group("res") + ("/scale" if m.group("sub") else "")
        what = '%s.apps "%s"' % (m.group("res"), m.group("name")) if m.group("name") else \
            "%s.apps" % m.group("res")
        msg = ('%s is forbidden: User "%s" cannot %s resource "%s" in API group "apps" in the '
               'namespace "%s"' % (what, user, verb, res, m.group("ns") or ""))
    else:
        msg = 'forbidden: User "%s" cannot %s path "%s"' % (user, verb, path)
    handler.send_json(403, k8s_standin.status_obj(403, "Forbidden", msg))


def main():
    args = sys.argv[1:]
    readonly = ""
    if "--readonly-token-file" in args:
        i = args.index("--readonly-token-file")
        with open(args[i + 1], encoding="utf-8") as f:
            readonly = f.read().strip()
        args = args[:i] + args[i + 2:]
    sys.argv = [sys.argv[0]] + args
    handler = k8s_standin.K8sHandler
    token_auth = handler.authorized
    base_preflight = handler.preflight

    def is_readonly(self):
        auth = self.headers.get("Authorization", "")
        return bool(readonly) and auth.startswith("Bearer ") and auth[7:].strip() == readonly

    def authorized(self):
        if lab_http.read_fault(self.fault_file) == "401":
            return False
        return is_readonly(self) or token_auth(self)

    def preflight(self):
        if not base_preflight(self):
            return False
        if urllib.parse.urlsplit(self.path).path in PUBLIC:
            return True
        fault = lab_http.read_fault(self.fault_file)
        if fault == "403":
            forbidden(self, "system:serviceaccount:triad:triad")
            return False
        if is_readonly(self) and self.command != "GET":
            forbidden(self, "system:serviceaccount:triad:viewer")
            return False
        if self.command == "PATCH" and fault in ("409", "409-once"):
            if fault == "409-once":
                with once_lock:
                    if lab_http.read_fault(self.fault_file) != "409-once":
                        return True  # another request took the one conflict
                    os.remove(self.fault_file)
            m = k8s_standin.PATH_RE.match(urllib.parse.urlsplit(self.path).path)
            err = k8s_standin.conflict(m.group("res") if m else "deployments",
                                       m.group("name") if m else "")
            self.send_json(409, err.status)
            return False
        return True

    handler.authorized = authorized
    handler.preflight = preflight
    k8s_standin.main()


if __name__ == "__main__":
    main()
