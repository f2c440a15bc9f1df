# syntax=docker/dockerfile:1
# cainjekt: one static binary, in an image that holds nothing else.
#   docker build --build-arg VERSION=v0.1.0 -t registry.example.com/cainjekt:v0.1.0 .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go ./
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /cainjekt .

# distroless/static: no shell, no package manager, CA certificates and
# /etc/passwd only. The DaemonSet runs it as root (see deploy/base).
FROM gcr.io/distroless/static-debian12
COPY --from=build /cainjekt /cainjekt
ENTRYPOINT ["/cainjekt"]
CMD ["plugin"]
