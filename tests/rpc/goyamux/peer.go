// peer is an interop server for coder-agent's yamux client: the real
// hashicorp/yamux server behind a websocket, the way coderd runs it
// (nhooyr/coder websocket, NetConn over binary messages, yamux.DefaultConfig).
//
// Build (offline, Debian packages golang-go golang-github-hashicorp-yamux-dev
// golang-nhooyr-websocket-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o peer peer.go
//
// It listens on 127.0.0.1:0, prints "PORT <n>" on stdout, and exits when its stdin
// closes, so a test that dies cannot leave it behind. Every websocket request on any
// path is upgraded; every accepted yamux stream starts with a one-byte mode:
//
//	'E'            echo every byte back until EOF, then close (FIN)
//	'B' + u32 n    write n bytes where byte i is i % 251, then close
//	'P'            ping the client via yamux (session.Ping), write "ok" or "err: ..."
//	               then close
//	'G'            send GoAway(normal) on the session, write "ok", then close
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/hashicorp/yamux"
	"nhooyr.io/websocket"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		// The test holds our stdin; EOF means it is gone.
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	fmt.Printf("PORT %d\n", ln.Addr().(*net.TCPAddr).Port)
	_ = os.Stdout.Sync()
	log.Fatal(http.Serve(ln, http.HandlerFunc(serveWS)))
}

func serveWS(w http.ResponseWriter, r *http.Request) {
	// Like coderd: no compression (the Debian library offers it by default).
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		log.Printf("accept: %v", err)
		return
	}
	c.SetReadLimit(1 << 22)
	ctx := r.Context()
	nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	sess, err := yamux.Server(nc, cfg)
	if err != nil {
		log.Printf("yamux: %v", err)
		return
	}
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			log.Printf("session ended: %v", err)
			return
		}
		go handle(ctx, sess, st)
	}
}

func handle(_ context.Context, sess *yamux.Session, st *yamux.Stream) {
	defer st.Close()
	rd := bufio.NewReader(st)
	mode, err := rd.ReadByte()
	if err != nil {
		log.Printf("stream %d: no mode: %v", st.StreamID(), err)
		return
	}
	switch mode {
	case 'E':
		if _, err := io.Copy(st, rd); err != nil {
			log.Printf("stream %d: echo: %v", st.StreamID(), err)
		}
	case 'B':
		var hdr [4]byte
		if _, err := io.ReadFull(rd, hdr[:]); err != nil {
			log.Printf("stream %d: size: %v", st.StreamID(), err)
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		buf := make([]byte, n)
		for i := range buf {
			buf[i] = byte(i % 251)
		}
		if _, err := st.Write(buf); err != nil {
			log.Printf("stream %d: write: %v", st.StreamID(), err)
		}
	case 'P':
		if rtt, err := sess.Ping(); err != nil {
			fmt.Fprintf(st, "err: %v", err)
		} else {
			log.Printf("ping rtt %v", rtt)
			_, _ = io.WriteString(st, "ok")
		}
	case 'G':
		if err := sess.GoAway(); err != nil {
			fmt.Fprintf(st, "err: %v", err)
		} else {
			_, _ = io.WriteString(st, "ok")
		}
	default:
		log.Printf("stream %d: unknown mode %q", st.StreamID(), mode)
	}
}
