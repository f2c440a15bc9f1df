//go:build hookonly

// The hook binary, cainjekt-hook: the OCI hook and the wrapper, and
// nothing of the plugin. runc starts it once or twice for every injected
// container, so it is built without the plugin's dependencies (NRI, ttrpc,
// protobuf, net/http), whose initialisation and size would cost every
// container start milliseconds: `go build -tags hookonly`.
package main

import (
	"fmt"
	"os"
)

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cainjekt-hook hook|wrap|version")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hook":
		os.Exit(runHook(os.Args[2:], os.Stdin, os.Stderr))
	case "wrap":
		os.Exit(runWrapper(os.Args[2:], os.Stderr))
	case "version", "--version":
		fmt.Println("cainjekt-hook", version)
		return
	}
	fmt.Fprintf(os.Stderr, "cainjekt-hook: unknown command %q\n", os.Args[1])
	os.Exit(2)
}
