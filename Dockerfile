# syntax=docker/dockerfile:1
# cainjekt: two static binaries, in an image that holds nothing else.
#   docker build --build-arg VERSION=v0.1.0 -t registry.example.com/cainjekt:v0.1.0 .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go ./
ARG VERSION=dev
# cainjekt: the plugin and the commands; cainjekt-hook: the hook and the
# wrapper alone, which runc starts for every injected container. The plugin
# speaks HTTP/1.1 only (nethttpomithttp2: 0.6 MB less), as `make build` does.
RUN CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 -ldflags "-s -w -X main.version=${VERSION}" -o /cainjekt . && \
    CGO_ENABLED=0 go build -trimpath -tags hookonly -ldflags "-s -w -X main.version=${VERSION}" -o /cainjekt-hook .

# distroless/static: no shell, no package manager, CA certificates and
# /etc/passwd only. The DaemonSet runs it as root (see deploy/base).
FROM gcr.io/distroless/static-debian12
COPY --from=build /cainjekt /cainjekt-hook /
ENTRYPOINT ["/cainjekt"]
CMD ["plugin"]
