// Command tlsget fetches URLs with Go's standard library and nothing else:
// the client of the test bed's scratch and distroless images, which have no
// shell. Go reads its roots at run time (SSL_CERT_FILE, else the first bundle
// of its search list), even in a static binary. For each URL it prints
// "OK URL" or "FAIL URL: error", and it exits with the number of failures.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tlsget URL...")
		os.Exit(2)
	}
	client := http.Client{Timeout: 20 * time.Second}
	failed := 0
	for _, url := range os.Args[1:] {
		if err := get(&client, url); err != nil {
			fmt.Printf("FAIL %s: %v\n", url, err)
			failed++
			continue
		}
		fmt.Printf("OK %s\n", url)
	}
	os.Exit(failed)
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s", resp.Status)
	}
	return nil
}
