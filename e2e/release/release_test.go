package release

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Dockerfile's final stage must describe the image Build writes: from
// scratch, the same files, the same command, the binaries built with the
// same tags and flags.
func TestDockerfileDescribesTheImage(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from string
	var copies, builds []string
	var entrypoint, cmd []string
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(string(data), "\\\n", " ")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		word, rest, _ := strings.Cut(line, " ")
		switch word {
		case "FROM":
			from, copies = rest, nil // the final stage is the last one
		case "COPY":
			if strings.HasPrefix(rest, "--from=build ") {
				copies = append(copies, strings.Fields(strings.TrimPrefix(rest, "--from=build "))...)
			}
		case "RUN":
			for _, part := range strings.Split(rest, "&&") {
				if strings.Contains(part, "go build") {
					builds = append(builds, strings.Join(strings.Fields(part), " "))
				}
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &entrypoint); err != nil {
				t.Fatalf("ENTRYPOINT: %v", err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(rest), &cmd); err != nil {
				t.Fatalf("CMD: %v", err)
			}
		}
	}
	if from != "scratch" {
		t.Errorf("final stage FROM %q, want scratch: the image holds the binaries only", from)
	}
	if len(copies) == 0 || copies[len(copies)-1] != "/" || !slices.Equal(copies[:len(copies)-1], Files) {
		t.Errorf("final stage copies %v, want %v to /", copies, Files)
	}
	if !slices.Equal(entrypoint, Entrypoint) || !slices.Equal(cmd, Cmd) {
		t.Errorf("ENTRYPOINT %v CMD %v, want %v %v", entrypoint, cmd, Entrypoint, Cmd)
	}
	if len(builds) != len(binaries) {
		t.Fatalf("Dockerfile builds %d binaries, the image %d: %q", len(builds), len(binaries), builds)
	}
	for i, b := range binaries {
		want := `CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags ` + b.tags + " " +
			strings.Join(append(b.buildArgs(), ""), " ") + `-ldflags "-s -w -X main.version=${VERSION}" -o /` + b.name + ` .`
		if builds[i] != want {
			t.Errorf("Dockerfile builds\n  %s\nrelease builds\n  %s", builds[i], want)
		}
	}
}

// A dynamically linked binary, or one of another machine, would not run in
// the image: checkELF refuses both.
func TestCheckELF(t *testing.T) {
	exe, err := os.Executable() // a test binary: static or not, it is this machine's
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	machine := f.Machine
	f.Close()
	other := elf.EM_AARCH64
	if machine == elf.EM_AARCH64 {
		other = elf.EM_X86_64
	}
	if err := checkELF(exe, other); err == nil {
		t.Errorf("checkELF accepted a %v binary as %v", machine, other)
	}
	if err := checkELF("/bin/sh", machine); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkELF(/bin/sh) = %v, want dynamically linked", err)
	}
}

// The Dockerfile's build stage gets the module's sources and, where `go
// mod vendor` made it, vendor/, so that an air-gapped build fetches
// nothing; nothing else of the checkout is sent. .dockerignore is read as
// Docker reads it: patterns in order, the last that matches a path or a
// directory above it decides, `!` lets in.
func TestDockerBuildContext(t *testing.T) {
	data, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			if strings.Contains(line, "**") {
				t.Fatalf(".dockerignore pattern %q: ** is not read by this test", line)
			}
			patterns = append(patterns, line)
		}
	}
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var sources []string // what the build stages COPY from the context
	for _, line := range strings.Split(string(dockerfile), "\n") {
		if rest, ok := strings.CutPrefix(line, "COPY "); ok && !strings.HasPrefix(rest, "--from=") {
			f := strings.Fields(rest)
			sources = append(sources, f[:len(f)-1]...)
		}
	}
	for path, want := range map[string]bool{
		"go.mod": true, "go.sum": true, "main.go": true, "hook.go": true,
		"vendor/modules.txt": true, "vendor/github.com/containerd/nri/pkg/api/api.pb.go": true,
		"main_test.go": false, "testdata/certs/ca.pem": false, "e2e/go.mod": false, "deploy/base/daemonset.yaml": false,
		"bin/cainjekt": false, "vendor.txt": false, ".git/config": false, "README.md": false,
	} {
		if in := inContext(patterns, path) && slices.ContainsFunc(sources, func(src string) bool { return matchesOrParent(src, path) }); in != want {
			t.Errorf("%s reaches the build stage: %v, want %v", path, in, want)
		}
	}
}

// inContext says whether .dockerignore's patterns leave path in the context.
func inContext(patterns []string, path string) bool {
	in := true
	for _, p := range patterns {
		exclude, pattern := true, p
		if rest, ok := strings.CutPrefix(p, "!"); ok {
			exclude, pattern = false, rest
		}
		if matchesOrParent(pattern, path) {
			in = !exclude
		}
	}
	return in
}

// matchesOrParent says whether pattern matches path or a directory above it.
func matchesOrParent(pattern, path string) bool {
	pattern = filepath.Clean(pattern)
	for p := path; p != "."; p = filepath.Dir(p) {
		if ok, _ := filepath.Match(pattern, p); ok || pattern == "." {
			return true
		}
	}
	return false
}
