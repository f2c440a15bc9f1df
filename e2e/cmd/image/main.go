// Command image is `make image`: cainjekt's release image for linux/amd64
// and linux/arm64, built without a Docker engine into an OCI image layout
// archive, with its digests printed.
//
//	go run ./cmd/image --src .. --version v0.1.0 --ref ghcr.io/cainjekt/cainjekt:v0.1.0 --out ../bin/cainjekt-image.tar
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/cainjekt/cainjekt/e2e/release"
)

func main() {
	var opts release.Options
	flag.StringVar(&opts.Src, "src", "..", "the repository's root")
	flag.StringVar(&opts.Version, "version", "", "cainjekt's version, in the binaries")
	flag.StringVar(&opts.Ref, "ref", "", "the image's name with its tag")
	flag.StringVar(&opts.Out, "out", "", "the OCI layout archive to write")
	flag.Parse()
	opts.Log = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "image: "+format+"\n", args...) }
	img, err := release.Build(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\t%s\n", img.Ref, img.Archive)
	fmt.Printf("index\t%s\n", img.Index)
	for _, p := range release.Platforms {
		fmt.Printf("%s\t%s\n", p, img.Manifests[p.String()])
	}
}
