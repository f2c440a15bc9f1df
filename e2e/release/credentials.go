package release

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// authFilesHint says where credentials looks, for error messages.
const authFilesHint = "logins are read from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json and $DOCKER_CONFIG/config.json or ~/.docker/config.json"

// credentials is the login `docker login`, `podman login` or `skopeo login`
// stored for a registry host, from the first file of authFiles that has one:
// from the credential helper the file names for the host (credHelpers, or
// credsStore for every host), else its auths entry. No login is no error:
// the push goes on anonymously, and the registry says whether it may.
func credentials(ctx context.Context, host string) (user, secret string, err error) {
	for _, path := range authFiles() {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("read logins: %w", err)
		}
		var file authFile
		if err := json.Unmarshal(data, &file); err != nil {
			return "", "", fmt.Errorf("read logins of %s: %w", path, err)
		}
		user, secret, err := file.lookup(ctx, host)
		if err != nil {
			return "", "", fmt.Errorf("login for %s in %s: %w", host, path, err)
		}
		if user != "" || secret != "" {
			return user, secret, nil
		}
	}
	return "", "", nil
}

// authFiles are where the container tools keep logins, in the order podman
// and skopeo read them: their own file, then Docker's.
func authFiles() []string {
	var files []string
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		files = append(files, f)
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		files = append(files, filepath.Join(dir, "containers", "auth.json"))
	}
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		return append(files, filepath.Join(dir, "config.json"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".docker", "config.json"))
	}
	return files
}

// authFile is the format of Docker's config.json and of containers'
// auth.json alike.
type authFile struct {
	Auths map[string]struct {
		Auth string `json:"auth"` // base64 of user:password
	} `json:"auths"`
	CredHelpers map[string]string `json:"credHelpers"`
	CredsStore  string            `json:"credsStore"`
}

func (f authFile) lookup(ctx context.Context, host string) (string, string, error) {
	if helper := cmp.Or(f.CredHelpers[host], f.CredsStore); helper != "" {
		user, secret, err := credentialHelper(ctx, helper, serverURL(host))
		if err != nil || user != "" || secret != "" {
			return user, secret, err
		}
	}
	// The entry under the host itself first: Docker writes Docker Hub's as
	// https://index.docker.io/v1/, podman as docker.io.
	for _, key := range []string{host, serverURL(host), "https://" + host, "http://" + host} {
		entry, ok := f.Auths[key]
		if !ok {
			continue
		}
		decoded, err := base64.StdEncoding.DecodeString(entry.Auth)
		user, secret, colon := strings.Cut(string(decoded), ":")
		if err != nil || !colon {
			return "", "", fmt.Errorf("its auths entry %q is not base64 of user:password", key)
		}
		return user, secret, nil
	}
	return "", "", nil
}

// serverURL is the name Docker gives a registry host in its logins.
func serverURL(host string) string {
	if host == "docker.io" {
		return "https://index.docker.io/v1/"
	}
	return host
}

// credentialHelper asks a Docker credential helper, docker-credential-NAME,
// for the login of server: `get`, the server on stdin, JSON on stdout.
func credentialHelper(ctx context.Context, name, server string) (string, string, error) {
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(server)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// The helpers' protocol: this message on stdout, for no login.
		if strings.Contains(stdout.String(), "credentials not found") {
			return "", "", nil
		}
		return "", "", fmt.Errorf("credential helper docker-credential-%s: %w: %s%s", name, err, stdout.Bytes(), stderr.Bytes())
	}
	var login struct{ Username, Secret string }
	if err := json.Unmarshal(stdout.Bytes(), &login); err != nil {
		return "", "", fmt.Errorf("credential helper docker-credential-%s: %w", name, err)
	}
	return login.Username, login.Secret, nil
}
