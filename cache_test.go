package main

import (
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testImage = "sha256:1111111111111111111111111111111111111111111111111111111111111111"

// imageBeds are containers of one image with language runtimes, on one
// node, none of them started yet.
func imageBeds(t *testing.T, n int) []*hookBed {
	t.Helper()
	first := newHookBed(t, "debian", runtimesPATH, "HOSTNAME=first")
	addRuntimes(t, first.rootfs, "cacerts.jks")
	beds := []*hookBed{first}
	for i := 1; i < n; i++ {
		beds = append(beds, first.sibling(t, hexID(100+i), "HOSTNAME=other"))
	}
	return beds
}

// runCached runs the hook on a bed as the plugin does for an image it
// knows, and returns its status.
func runCached(t *testing.T, b *hookBed, image string, processors ...string) hookStatus {
	t.Helper()
	args := append(b.args(failClosed, processors...), "--image", image)
	if code := runHook(args, strings.NewReader(string(b.state())), io.Discard); code != 0 {
		st, _ := b.status(t)
		t.Fatalf("exit %d: %v", code, st.Errors)
	}
	st, _ := b.status(t)
	return st
}

// The second container of an image gets, from the cache, exactly what the
// first got by doing the work: every file of its rootfs and its staging,
// the status and the wrapper's variables. Its staged bundle is a link to
// the cache's, with the image bundle's attributes.
func TestImageCacheReplaysTheSameInjection(t *testing.T) {
	beds := imageBeds(t, 2)
	os.Chmod(filepath.Join(beds[0].rootfs, "etc/ssl/certs/ca-certificates.crt"), 0o640)
	os.Chmod(filepath.Join(beds[1].rootfs, "etc/ssl/certs/ca-certificates.crt"), 0o640)
	first, second := runCached(t, beds[0], testImage), runCached(t, beds[1], testImage)
	if first.Cache != cacheMiss || second.Cache != cacheHit {
		t.Fatalf("cache %q then %q, want a miss then a hit", first.Cache, second.Cache)
	}
	if !maps.Equal(snapshot(t, beds[0].rootfs), snapshot(t, beds[1].rootfs)) {
		t.Error("the rootfs of the second container differs from the first's")
	}
	for _, name := range []string{stagedBundle, stagedCA} {
		if string(beds[0].read(t, filepath.Join(beds[0].staging, name))) != string(beds[1].read(t, filepath.Join(beds[1].staging, name))) {
			t.Errorf("staged %s differs", name)
		}
	}
	fi, err := os.Stat(filepath.Join(beds[1].staging, stagedBundle))
	if err != nil || fi.Sys().(*syscall.Stat_t).Nlink < 2 || fi.Mode().Perm() != 0o640 {
		t.Errorf("the staged bundle is not a link to the cache's with the image bundle's mode: %v %v", fi.Mode(), err)
	}
	if !slices.Equal(first.Files, second.Files) || first.ImageTrustBytes != second.ImageTrustBytes ||
		first.OSRelease.ID != second.OSRelease.ID || first.Family != second.Family {
		t.Errorf("status differs:\n%+v\n%+v", first, second)
	}
}

// Under a user namespace, what the hook creates in the image belongs to
// the container's root, not to the host's (whom the container sees as
// nobody), and staged files holding the image's trust get the image
// bundle's owner: from the cache too, for a pod whose namespace maps its
// IDs elsewhere than the pod that saved the entry (copied, not linked).
func TestUserNamespacedContainersOwnWhatTheHookMakes(t *testing.T) {
	beds := imageBeds(t, 3)
	bases := []uint32{2 << 16, 3 << 16, 2 << 16} // the third: the first pod's again
	for i, b := range beds {
		if err := os.RemoveAll(filepath.Join(b.rootfs, "usr/local/share/ca-certificates")); err != nil {
			t.Fatal(err)
		}
		b.inUserNS(t, bases[i])
	}
	for i, b := range beds {
		if st := runCached(t, b, testImage); st.Cache != []string{cacheMiss, cacheHit, cacheHit}[i] {
			t.Errorf("container %d: cache %q", i, st.Cache)
		}
		for _, p := range []string{
			filepath.Join(b.rootfs, "usr/local/share/ca-certificates"),
			filepath.Join(b.rootfs, "usr/local/share/ca-certificates/cainjekt.crt"),
			filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt"),
			filepath.Join(b.staging, stagedBundle),
		} {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil || st.Uid != bases[i] || st.Gid != bases[i] {
				t.Errorf("container %d: %s owned by %d:%d (%v), want its root, %d", i, p, st.Uid, st.Gid, err, bases[i])
			}
		}
	}
	var other, same syscall.Stat_t
	syscall.Stat(filepath.Join(beds[1].staging, stagedBundle), &other)
	syscall.Stat(filepath.Join(beds[2].staging, stagedBundle), &same)
	if other.Nlink != 1 || same.Nlink < 2 {
		t.Errorf("staged bundle links: %d under another mapping (want a copy), %d under the saving one (want a link)", other.Nlink, same.Nlink)
	}
}

// What a pod mounts over the image's trust is no part of the image: its
// container neither replays the image's entry nor saves one.
func TestImageCacheLeavesPodVolumesOut(t *testing.T) {
	beds := imageBeds(t, 4)
	podBundle := readTestdata(t, "certs/public-b.pem")
	vol := configMapVolume(t, map[string][]byte{"ca-certificates.crt": podBundle})
	beds[1].mount(t, "/etc/ssl/certs", vol)
	beds[2].mount(t, "/etc/ssl/certs", vol)
	for i, want := range []string{cacheMiss, cachePod, cachePod, cacheHit} {
		if st := runCached(t, beds[i], testImage); st.Cache != want {
			t.Errorf("container %d: cache %q, want %q", i, st.Cache, want)
		}
	}
	for _, b := range beds[1:3] {
		if staged := b.read(t, filepath.Join(b.staging, stagedBundle)); !strings.HasPrefix(string(staged), string(podBundle)) {
			t.Error("a container with its own bundle mounted got the image's")
		}
	}
}

// Whatever the injection depends on is in the cache's key: another image,
// other CAs, processors or variables the injection reads make a miss;
// variables it does not read do not.
func TestImageCacheKey(t *testing.T) {
	beds := imageBeds(t, 6)
	runCached(t, beds[0], testImage)
	other := "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	if st := runCached(t, beds[1], other); st.Cache != cacheMiss {
		t.Errorf("another image: %s", st.Cache)
	}
	if st := runCached(t, beds[2], testImage, procPython); st.Cache != cacheMiss {
		t.Errorf("other processors: %s", st.Cache)
	}
	javaHome := beds[3].sibling(t, hexID(200), "JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64")
	if st := runCached(t, javaHome, testImage); st.Cache != cacheMiss {
		t.Errorf("another JAVA_HOME: %s", st.Cache)
	}
	otherCAs := beds[4]
	otherCAs.ours, _, _ = parseCABundle(readTestdata(t, "certs/corp-second.pem"))
	otherCAs.create(t, beds[5].rootfs)
	if st := runCached(t, otherCAs, testImage); st.Cache != cacheMiss {
		t.Errorf("other CAs: %s", st.Cache)
	}
	if st := runCached(t, beds[5], testImage); st.Cache != cacheHit {
		t.Errorf("only HOSTNAME differs: %s, want a hit", st.Cache)
	}
}

// Only a run without any error is kept: an image whose injection failed
// is injected in full, and fails, every time.
func TestImageCacheKeepsNoFailure(t *testing.T) {
	beds := imageBeds(t, 2)
	for _, b := range beds {
		p := filepath.Join(b.rootfs, "etc/ssl/certs/ca-certificates.crt")
		os.Remove(p)
		os.Mkdir(p, 0o755)
	}
	for _, b := range beds {
		args := append(b.args(failOpen), "--image", testImage)
		runHook(args, strings.NewReader(string(b.state())), io.Discard)
		if st, _ := b.status(t); st.Result != hookResultFailed || st.Cache == cacheHit {
			t.Errorf("result %s, cache %q", st.Result, st.Cache)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(beds[0].dynamicRoot, cacheDirName)); len(entries) != 0 {
		t.Errorf("a failed injection left %d cache entries", len(entries))
	}
}

// An entry that does not replay (here, data that names no file of it)
// costs a full injection, which replaces it.
func TestImageCacheRecoversFromABrokenEntry(t *testing.T) {
	beds := imageBeds(t, 3)
	runCached(t, beds[0], testImage)
	cache := filepath.Join(beds[0].dynamicRoot, cacheDirName)
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Fatalf("%d entries", len(entries))
	}
	plan := filepath.Join(cache, entries[0].Name(), planFile)
	data, _ := os.ReadFile(plan)
	os.WriteFile(plan, []byte(strings.Replace(string(data), `"blob":"`, `"blob":"../../`, 1)), 0o600)
	if st := runCached(t, beds[1], testImage); st.Cache != cacheMiss || st.Result != hookResultOK {
		t.Errorf("a broken entry: cache %q, result %s", st.Cache, st.Result)
	}
	if st := runCached(t, beds[2], testImage); st.Cache != cacheHit {
		t.Errorf("after the broken entry was replaced: %s", st.Cache)
	}
}

// The plugin keeps the cache to the current CA sets and its bounds: it
// drops entries of other sets, temporaries of dead hooks, what is not an
// entry at all, and the entries used least recently beyond the bounds.
func TestPruneCache(t *testing.T) {
	s, root := newTestStager(t)
	cache := filepath.Join(root, cacheDirName)
	current, old := strings.Repeat("a", 64), strings.Repeat("b", 64)
	now := time.Now()
	entry := func(sha string, n int, used time.Time, size int) string {
		name := sha[:16] + "-" + hexID(n)
		writeTree(t, cache, map[string]string{name + "/" + planFile: strings.Repeat("x", size)})
		os.Chtimes(filepath.Join(cache, name), used, used)
		return name
	}
	var want []string
	for i := range cacheMaxEntries + 5 {
		name := entry(current, i, now.Add(-time.Duration(i)*time.Minute), 10)
		if i < cacheMaxEntries {
			want = append(want, name)
		}
	}
	entry(old, 1, now, 10)
	writeTree(t, cache, map[string]string{".tmp-dead/x": "x", ".tmp-busy/x": "x", "junk": "x"})
	os.Chtimes(filepath.Join(cache, ".tmp-dead"), now.Add(-time.Hour), now.Add(-time.Hour))
	want = append(want, ".tmp-busy")
	if err := s.pruneCache([]string{current}, now); err != nil {
		t.Fatal(err)
	}
	var got []string
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %d entries, want %d: %v", len(got), len(want), got[len(got)-3:])
	}

	big := entry(current, 999, now.Add(time.Minute), cacheMaxBytes)
	if err := s.pruneCache([]string{current}, now); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 2 || entries[0].Name() == big {
		t.Errorf("an entry over the cache's bytes: left %d entries", len(entries))
	}
}

// A plan too large to be read back (paths of an image's choosing can be
// long) is not saved: otherwise every container of the image would save
// it, fail to load it, drop it and save it again.
func TestImageCacheSavesNoPlanItCannotRead(t *testing.T) {
	_, dynamicRoot := newTestStager(t)
	root, err := openOwnDir(dynamicRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	cache, err := openCache(root)
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	in := &injection{}
	long := "/" + strings.Repeat("d/", 2000)
	for i := range 20 {
		in.writes = append(in.writes, plannedWrite{Op: opWrite, Path: long + strconv.Itoa(i), data: []byte("x")})
	}
	entry := strings.Repeat("a", 16) + "-" + strings.Repeat("b", 64)
	if err := in.savePlan(cache, entry, &plan{}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPlan(cache, entry); err != errNoEntry {
		t.Errorf("a plan over %d bytes: %v, want no entry at all", maxPlanSize, err)
	}
}
