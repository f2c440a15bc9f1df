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

func main() { os.Exit(run(os.Args[1:])) }

// run is the binary's command line; it returns the exit code.
func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: cainjekt-hook hook|wrap|version")
		return 2
	}
	switch args[0] {
	case "hook":
		return runHook(args[1:], os.Stdin, os.Stderr)
	case "wrap":
		return runWrapper(args[1:], os.Stderr)
	case "version", "--version":
		fmt.Println("cainjekt-hook", version)
		return 0
	}
	fmt.Fprintf(os.Stderr, "cainjekt-hook: unknown command %q\n", args[0])
	return 2
}
