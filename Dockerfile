# syntax=docker/dockerfile:1
# cainjekt: two static binaries, in an image that holds nothing else.
#   docker build --build-arg VERSION=v0.1.0 -t registry.example.com/cainjekt:v0.1.0 .
# `make image` builds the same image without Docker, for linux/amd64 and
# linux/arm64 (e2e/release; its tests hold the two together).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go ./
ARG VERSION=dev
# cainjekt: the plugin and the commands; cainjekt-hook: the hook and the
# wrapper alone, which runc starts for every injected container. The plugin
# speaks HTTP/1.1 only (nethttpomithttp2) and is built without inlining
# (all=-l): 1.2 MiB less, as `make build` does.
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
