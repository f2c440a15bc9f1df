#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian machine of the
# project's kind (Go and gcc are already there). Idempotent and quick when
# everything is present: it only calls apt-get for what is missing.
#
#   debootstrap  builds the test images' root filesystems (make e2e, make demo)
#   promtool     (Debian's prometheus package) checks the /metrics format
#   keytool      (Debian's JRE) reads back the Java truststores cainjekt writes
#   npm          fetches Deno, which Debian does not package, for the runtimes image
#   qemu-aarch64 (Debian's qemu-user) runs the arm64 binaries of make image
#   iptables     kube-proxy's Service routing (make cluster-e2e)
#   libseccomp-dev  runc for the kubelet is built with seccomp (RuntimeDefault)
#   skopeo, docker-registry  make cluster-e2e pushes the image as the docs say, to a local registry;
#                skopeo also puts images into CRI-O's storage (make e2e)
#   conmon       CRI-O's container monitor (make e2e's CRI-O node)
#   tar, openssl, ca-certificates, iproute2, util-linux: the test bed's tools
set -euo pipefail

declare -A want=(
  [debootstrap]=debootstrap
  [promtool]=prometheus
  [keytool]=openjdk-17-jre-headless
  [npm]=npm
  [tar]=tar
  [openssl]=openssl
  [mountpoint]=util-linux
  [qemu-aarch64]=qemu-user
  [iptables]=iptables
  [ip]=iproute2
  [skopeo]=skopeo
  [docker-registry]=docker-registry
  [conmon]=conmon
)
missing=()
for tool in "${!want[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${want[$tool]}")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
[ -e /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
[ -e /usr/include/seccomp.h ] || missing+=(libseccomp-dev)

# kubectl renders deploy/ (kubectl kustomize); where it is missing, the same
# kustomize from the Go module proxy does.
if ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
  echo "install-deps: installing kustomize from the Go module proxy"
  GOBIN=/usr/local/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.3
fi

# staticcheck (make lint): Go's vet and more, a pinned release from the
# Go module proxy.
if ! command -v staticcheck >/dev/null 2>&1; then
  echo "install-deps: installing staticcheck from the Go module proxy"
  GOBIN=/usr/local/bin go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

# deadcode (make lint): the hook build must hold only code the hook runs.
if ! command -v deadcode >/dev/null 2>&1; then
  echo "install-deps: installing deadcode from the Go module proxy"
  GOBIN=/usr/local/bin go install golang.org/x/tools/cmd/deadcode@v0.52.0
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
