package testbed

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// NpmFile returns one file of an npm package, fetched with `npm pack` from the registry
// npm is configured with, and cached by package and version.
func NpmFile(ctx context.Context, pkg, version, file string, log func(string, ...any)) ([]byte, error) {
	log = logger(log)
	key := contentKey([]byte(pkg), []byte(version))[:12]
	dir, err := cached("npm-"+key, func(tmp string) error {
		log("fetching %s@%s from the npm registry", pkg, version)
		cmd := command(ctx, "npm", "pack", "--silent", "--pack-destination", tmp, pkg+"@"+version)
		cmd.Dir = tmp
		return run(cmd)
	})
	if err != nil {
		return nil, err
	}
	tgzs, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil || len(tgzs) != 1 {
		return nil, fmt.Errorf("npm pack of %s@%s left %v (%v)", pkg, version, tgzs, err)
	}
	return fileFromTgz(tgzs[0], "package/"+file)
}

func fileFromTgz(tgz, name string) ([]byte, error) {
	f, err := os.Open(tgz)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tgz, err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s has no %s", tgz, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tgz, err)
		}
		if hdr.Name == name {
			return io.ReadAll(tr)
		}
	}
}
