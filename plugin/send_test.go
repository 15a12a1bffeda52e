package plugin

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/fusevol/fusevol/backend"
	"github.com/fusevol/fusevol/plugin/api"
	"github.com/fusevol/fusevol/plugin/client"
)

// The send and receive routes stream past the control API's body limit, report the store's
// errors with their codes, and hide the volume being received.
func TestSendReceiveRoutes(t *testing.T) {
	ctx := context.Background()
	td := startDaemon(t, "")
	c := client.New(td.sock)
	if _, err := c.CreateVolume(ctx, "v", nil); err != nil {
		t.Fatal(err)
	}
	st, err := td.storeFor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.OpenVolume(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	a, err := v.Mknod(ctx, backend.RootIno, "f", backend.NewNode{Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3*api.MaxBodyBytes) // a stream over the JSON body limit
	rand.NewChaCha8([32]byte{7}).Read(data)
	if _, err := v.WriteAt(ctx, a.Ino, data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSnapshot(ctx, "v", "s"); err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	sent, err := c.Send(ctx, "v", "s", "", &stream)
	if err != nil || sent.Bytes != int64(stream.Len()) || sent.Bodies == 0 || stream.Len() < len(data) {
		t.Fatalf("send: %+v (%d bytes), %v", sent, stream.Len(), err)
	}
	// Into the store it came from: every chunk is there already.
	got, err := c.Receive(ctx, "w", false, bytes.NewReader(stream.Bytes()))
	if err != nil || got.Snapshot != "s" || got.Bytes != sent.Bytes || got.Bodies != 0 || got.Skipped != sent.Bodies {
		t.Fatalf("receive: %+v, %v", got, err)
	}

	damaged := bytes.Clone(stream.Bytes())
	damaged[len(damaged)/2] ^= 1
	for _, tt := range []struct {
		what string
		err  error
		code string
		msg  string
	}{
		{"full stream onto a volume", recvErr(c, "w", stream.Bytes(), false), api.CodeExists, "already exists"},
		{"damaged stream", recvErr(c, "x", damaged, false), api.CodeInvalid, "bad send stream"},
		{"not a stream", recvErr(c, "x", []byte("hello"), false), api.CodeInvalid, "bad send stream"},
		{"bad name", recvErr(c, "a~b", stream.Bytes(), false), api.CodeInvalid, "a~b"},
		{"missing snapshot", sendErr(c, "v", "nosuch", ""), api.CodeNotFound, "nosuch"},
		{"missing volume", sendErr(c, "nosuch", "s", ""), api.CodeNotFound, "nosuch"},
		{"bad base name", sendErr(c, "v", "s", "a~b"), api.CodeInvalid, "a~b"},
		{"base is no older snapshot", sendErr(c, "v", "s", "s"), api.CodeInvalid, "not an older snapshot"},
	} {
		if !api.HasCode(tt.err, tt.code) || !strings.Contains(tt.err.Error(), tt.msg) {
			t.Errorf("%s: %v, want code %s and %q", tt.what, tt.err, tt.code, tt.msg)
		}
	}
	req, _ := newRequest("POST", "/fusevol/v1/volumes/x/receive?force=maybe", "")
	resp, err := td.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("force=maybe: status %d", resp.StatusCode)
	}
	vols, err := c.ListVolumes(ctx)
	if err != nil || len(vols) != 2 {
		t.Fatalf("volumes after the refusals: %+v, %v", vols, err)
	}
	rep, err := c.Fsck(ctx, false)
	if err != nil || !rep.Clean {
		t.Fatalf("fsck: %+v, %v", rep, err)
	}
}

func recvErr(c *client.Client, vol string, stream []byte, force bool) error {
	_, err := c.Receive(context.Background(), vol, force, bytes.NewReader(stream))
	return err
}

func sendErr(c *client.Client, vol, snap, from string) error {
	var buf bytes.Buffer
	_, err := c.Send(context.Background(), vol, snap, from, &buf)
	return err
}
