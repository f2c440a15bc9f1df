# cainjekt: two static binaries, in an image that holds nothing else.
#   docker build --build-arg VERSION=v0.1.0 -t registry.example.com/cainjekt:v0.1.0 .
# `make image` builds the same image without Docker, for linux/amd64 and
# linux/arm64 (e2e/release; its tests hold the two together).
#
# Air-gapped: after `go mod vendor`, the build takes every module from
# vendor/ and fetches none; GO_IMAGE names a Go 1.26 image your registry
# mirrors. No syntax directive: it would fetch a Dockerfile frontend image.

ARG GO_IMAGE=golang:1.26
FROM ${GO_IMAGE} AS build
WORKDIR /src
# The context, as .dockerignore leaves it: go.mod, go.sum, the sources
# without their tests, and vendor/ where there is one. (Copying vendor/ only
# if it is there takes a wildcard that matches nothing otherwise, which
# BuildKit allows and Buildah refuses.)
COPY . ./
ARG VERSION=dev
# cainjekt: the plugin and the commands; cainjekt-hook: the hook and the
# wrapper alone, which runc starts for every injected container. The plugin
# speaks HTTP/1.1 only (nethttpomithttp2) and is built without inlining
# (all=-l): 1.2 MiB less, as `make build` does. go build takes the modules
# from vendor/ where it is there, else downloads them.
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags nethttpomithttp2 -gcflags all=-l -ldflags "-s -w -X main.version=${VERSION}" -o /cainjekt . && \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags hookonly -ldflags "-s -w -X main.version=${VERSION}" -o /cainjekt-hook .

# Nothing but the binaries: the plugin runs as root (see deploy/base), reads
# nothing of its image and writes nothing to it, and talks to the API server
# with the service account's CA, so it needs no passwd, no CA certificates,
# no shell.
FROM scratch
COPY --from=build /cainjekt /cainjekt-hook /
ENTRYPOINT ["/cainjekt"]
CMD ["plugin"]
