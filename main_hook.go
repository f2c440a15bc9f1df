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
	command := ""
	if len(args) > 0 {
		command, args = args[0], args[1:]
	}
	switch command {
	case "hook":
		return runHook(args, os.Stdin, os.Stdout, os.Stderr)
	case "wrap":
		return runWrapper(args, os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("cainjekt-hook", version)
		return 0
	case "help", "-h", "--help":
		fmt.Print(hookBinaryUsage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "cainjekt-hook: unknown command %q\n%s", command, hookBinaryUsage)
	return 2
}

const hookBinaryUsage = "usage: cainjekt-hook hook|wrap|version [-h]: the OCI hook and the wrapper, which the container runtime runs\n"
