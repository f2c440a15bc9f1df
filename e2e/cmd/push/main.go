// Command push is `make push`: make image's archive pushed to a registry,
// and the kustomization of deploy/base pointed at what was pushed, by tag
// and digest, so that `kubectl apply -k deploy/` and every overlay run it.
// It needs Go alone: no Docker, skopeo or kustomize.
//
//	go run ./cmd/push --archive ../bin/cainjekt-image.tar --ref registry.example.com/team/cainjekt:v0.1.0 --kustomization ../deploy/base/kustomization.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/cainjekt/cainjekt/e2e/release"
)

func main() {
	archive := flag.String("archive", "", "the OCI layout archive make image wrote")
	ref := flag.String("ref", "", "where to push it: HOST/REPOSITORY:TAG")
	kustomization := flag.String("kustomization", "", "the kustomization whose image cainjekt to set to what was pushed")
	flag.Parse()
	if *archive == "" || *ref == "" || *kustomization == "" {
		fail(fmt.Errorf("--archive, --ref and --kustomization are all needed"))
	}
	digest, err := release.Push(context.Background(), *archive, *ref)
	if err != nil {
		fail(err)
	}
	fmt.Printf("pushed\t%s@%s\n", *ref, digest)
	colon := strings.LastIndex(*ref, ":")
	if err := release.SetImage(*kustomization, "cainjekt", (*ref)[:colon], (*ref)[colon+1:], digest); err != nil {
		fail(err)
	}
	fmt.Printf("%s\timage cainjekt is %s@%s\n", *kustomization, *ref, digest)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "push:", err)
	os.Exit(1)
}
