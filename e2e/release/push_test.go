package release

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/cainjekt/cainjekt/e2e/oci"
	"github.com/cainjekt/cainjekt/e2e/testbed"
)

const testUser, testPassword = "builder", "s3cret"

// Push puts the image into a real registry (Debian's docker-registry,
// distribution) so that it serves the same index, and each platform's
// manifest, as the archive holds: without a login where anyone may push;
// with the login in Docker's config.json where the registry asks for Basic
// authentication (htpasswd); with a login from a credential helper where
// it sends clients to a token service for a Bearer token (token auth, as
// Docker Hub, GHCR, Harbor and GitLab do), whose tokens the registry
// verifies. Without the login, the push is refused, and the error says
// where logins are read.
func TestPushToARegistry(t *testing.T) {
	requireTool(t, "docker-registry")
	img := testImage(t)
	for _, c := range []struct {
		name string
		// registry returns the registry's auth section and, for its
		// client, the Authorization header to read it with.
		registry func(t *testing.T, dir string) (auth, header string)
		// login stores the login for host as a user would.
		login func(t *testing.T, dir, host string)
	}{
		{"anonymous", func(*testing.T, string) (string, string) { return "", "" }, nil},
		{"basic", htpasswdAuth, dockerConfigLogin},
		{"bearer", tokenAuth, credentialHelperLogin},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			// The machine's own logins stay out of it.
			home := filepath.Join(dir, "home")
			t.Setenv("HOME", home)
			t.Setenv("DOCKER_CONFIG", "")
			t.Setenv("REGISTRY_AUTH_FILE", "")
			t.Setenv("XDG_RUNTIME_DIR", "")
			auth, header := c.registry(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			reg, err := testbed.StartRegistry(ctx, dir, auth)
			if err != nil {
				t.Fatal(err)
			}
			defer reg.Close()
			ref := reg.Addr + "/team/cainjekt:v1"
			if c.login != nil {
				_, err := Push(ctx, img.Archive, ref)
				if err == nil || !strings.Contains(err.Error(), "logins are read from") {
					t.Errorf("push without a login: %v, want a refusal that says where logins are read", err)
				}
				c.login(t, home, reg.Addr)
			}
			digest, err := Push(ctx, img.Archive, ref)
			if err != nil {
				data, _ := os.ReadFile(reg.Log)
				t.Fatalf("%v\nregistry log:\n%s", err, data)
			}
			if digest != img.Index {
				t.Errorf("Push returned %s, the image's index is %s", digest, img.Index)
			}
			index := getManifest(t, reg.Addr, "team/cainjekt", "v1", oci.MediaTypeIndex, header)
			var listed struct{ Manifests []oci.Descriptor }
			if err := json.Unmarshal(index, &listed); err != nil {
				t.Fatal(err)
			}
			if got := oci.DataBlob(oci.MediaTypeIndex, index).Digest; got != img.Index || len(listed.Manifests) != len(Platforms) {
				t.Fatalf("the registry serves index %s of %d manifests, the archive holds %s:\n%s", got, len(listed.Manifests), img.Index, index)
			}
			for _, m := range listed.Manifests {
				manifest := getManifest(t, reg.Addr, "team/cainjekt", m.Digest, oci.MediaTypeManifest, header)
				if got := oci.DataBlob(oci.MediaTypeManifest, manifest).Digest; got != img.Manifests["linux/"+m.Platform.Architecture] {
					t.Errorf("the registry serves %s for linux/%s, the archive holds %s", got, m.Platform.Architecture, img.Manifests["linux/"+m.Platform.Architecture])
				}
			}
			// A second push, over what is there, goes through too.
			if _, err := Push(ctx, img.Archive, ref); err != nil {
				t.Errorf("second push: %v", err)
			}
		})
	}
}

// getManifest reads a manifest or index from the registry API.
func getManifest(t *testing.T, addr, repo, reference, mediaType, authorization string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/"+repo+"/manifests/"+reference, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", mediaType)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %s %s", req.URL, err, resp.Status, data)
	}
	return data
}

func basicHeader(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// htpasswdAuth has the registry ask for Basic authentication, against an
// htpasswd file of one user.
func htpasswdAuth(t *testing.T, dir string) (string, string) {
	hash, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(path, []byte(testUser+":"+string(hash)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: cainjekt-test\n    path: %s\n", path), basicHeader(testUser, testPassword)
}

// dockerConfigLogin is what `docker login` leaves: an auths entry in
// ~/.docker/config.json.
func dockerConfigLogin(t *testing.T, home, host string) {
	writeJSON(t, filepath.Join(home, ".docker", "config.json"), map[string]any{
		"auths": map[string]any{host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(testUser + ":" + testPassword))}},
	})
}

// credentialHelperLogin is a login kept by a credential helper, as Docker
// Desktop and the cloud registries' tools keep them: ~/.docker/config.json
// names the helper for the host, and the helper, a program on PATH, answers
// with the login.
func credentialHelperLogin(t *testing.T, home, host string) {
	bin := filepath.Join(home, "bin")
	script := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = get ] && [ \"$(cat)\" = %q ] || { echo 'credentials not found in native keychain'; exit 1; }\necho '{\"ServerURL\":%q,\"Username\":%q,\"Secret\":%q}'\n",
		host, host, testUser, testPassword)
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-cainjekt-test"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	writeJSON(t, filepath.Join(home, ".docker", "config.json"), map[string]any{"credHelpers": map[string]string{host: "cainjekt-test"}})
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tokenAuth has the registry send clients to a token service, which this
// test runs: it gives a token for the scope asked, to the one user, signed
// with a key whose certificate the registry trusts. The registry checks
// the token's signature, issuer, audience, times and access.
func tokenAuth(t *testing.T, dir string) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cainjekt test token issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "token.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	const service, issuer = "cainjekt-test-registry", "cainjekt-test-issuer"
	sign := func(access []map[string]any) string {
		enc := base64.RawURLEncoding
		header, _ := json.Marshal(map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(cert)}})
		now := time.Now().Unix()
		claims, _ := json.Marshal(map[string]any{"iss": issuer, "sub": testUser, "aud": service,
			"iat": now, "nbf": now - 60, "exp": now + 300, "jti": fmt.Sprint(now), "access": access})
		payload := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
		sum := sha256.Sum256([]byte(payload))
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			t.Fatal(err)
		}
		return payload + "." + enc.EncodeToString(append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...))
	}
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != basicHeader(testUser, testPassword) || r.URL.Query().Get("service") != service {
			http.Error(w, `{"details":"wrong login"}`, http.StatusUnauthorized)
			return
		}
		var access []map[string]any
		for _, scope := range r.URL.Query()["scope"] {
			if parts := strings.Split(scope, ":"); len(parts) == 3 {
				access = append(access, map[string]any{"type": parts[0], "name": parts[1], "actions": strings.Split(parts[2], ",")})
			}
		}
		json.NewEncoder(w).Encode(map[string]string{"token": sign(access)})
	}))
	t.Cleanup(tokens.Close)
	auth := fmt.Sprintf("auth:\n  token:\n    realm: %s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n", tokens.URL, service, issuer, bundle)
	pull := sign([]map[string]any{{"type": "repository", "name": "team/cainjekt", "actions": []string{"pull"}}})
	return auth, "Bearer " + pull
}

// parseRef finds the registry API of a reference: plain HTTP on the
// loopback only, Docker Hub's API host for docker.io.
func TestParseRef(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.example.com/team/cainjekt:v0.1.0":     "https://registry.example.com team/cainjekt v0.1.0",
		"registry.example.com:5000/cainjekt:1a2b-dirty": "https://registry.example.com:5000 cainjekt 1a2b-dirty",
		"127.0.0.1:5000/team/cainjekt:v1":               "http://127.0.0.1:5000 team/cainjekt v1",
		"[::1]:5000/cainjekt:v1":                        "http://[::1]:5000 cainjekt v1",
		"localhost:5000/cainjekt:v1":                    "http://localhost:5000 cainjekt v1",
		"docker.io/team/cainjekt:v1":                    "https://registry-1.docker.io team/cainjekt v1",
		"team/cainjekt:v1":                              "",
		"registry.example.com/cainjekt":                 "",
		"registry.example.com/Team/cainjekt:v1":         "",
		"registry.example.com/cainjekt:v1+build":        "",
		"registry.example.com:5000/cainjekt":            "",
	} {
		r, err := parseRef(ref)
		got := ""
		if err == nil {
			got = r.api + " " + r.repo + " " + r.tag
		}
		if got != want {
			t.Errorf("parseRef(%q) = %q (%v), want %q", ref, got, err, want)
		}
	}
}
