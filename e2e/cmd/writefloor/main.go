// Command writefloor is the floor make bench holds the hook to: a static Go
// program that starts, then reads each file of a set and writes it, as the
// hook writes its files (a temporary file beside the target, renamed over
// it), into a container's root filesystem and its staging directory. What
// the hook does beyond that (the OCI state and config, detection, parsing
// and merging, its report) is what it costs over any injector that writes
// the same files.
//
//	writefloor SET ROOTFS STAGING
//
// SET holds rootfs/ and staging/, the trees of files to write.
package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: writefloor SET ROOTFS STAGING")
		os.Exit(2)
	}
	for dir, dest := range map[string]string{"rootfs": os.Args[2], "staging": os.Args[3]} {
		if err := writeTree(filepath.Join(os.Args[1], dir), dest); err != nil {
			fmt.Fprintln(os.Stderr, "writefloor:", err)
			os.Exit(1)
		}
	}
}

// writeTree writes every regular file below src to the same path below dest.
func writeTree(src, dest string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		target := filepath.Join(dest, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".tmp")
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, target)
	})
}
