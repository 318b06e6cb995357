#!/usr/bin/env bash
# Writes the small seed corpora in fuzz/corpus/<target>/ from shapes the project's tests use
# (references from reference.rs's tests, manifests/configs/challenges/auth files like the
# unit tests' fixtures, a few handwritten tar layers). Idempotent; the fuzzer adds its own.
set -euo pipefail
cd "$(dirname "$0")"
c=corpus
mkdir -p $c/{reference,manifest,image_config,challenge,token_reply,credentials,registry_config,seccomp_profile,tar_layer,format_template,lazy_index}
i=0
put() { i=$((i+1)); printf '%s' "$2" >"$c/$1/seed-$i"; }
putb() { i=$((i+1)); printf "$2" >"$c/$1/seed-$i"; }
for r in busybox library/busybox:1.36 docker.io/library/alpine 127.0.0.1:5000/demo/busybox \
  localhost:5000/a/b@sha256:$(printf '%064d' 0) ghcr.io/org/app:v1.2.3 'UPPER/case' 'a//b' ':tag'; do
  put reference "$r"
done
D=sha256:$(printf 'a%.0s' {1..64})
M="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$D\",\"size\":2},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"$D\",\"size\":3}]}"
I="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$D\",\"size\":5,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$D\",\"size\":5,\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}}]}"
put manifest $'\x00'"$M"; put manifest $'\x01'"$M"; put manifest $'\x02'"$I"; put manifest $'\x04'"${I//oci.image.index.v1/docker.distribution.manifest.list.v2}"
put image_config "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"],\"Cmd\":[\"sh\"],\"WorkingDir\":\"/\",\"User\":\"1000:1000\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$D\"]}}"
put image_config '{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha512:00"]}}'
put challenge 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'
put challenge 'Basic realm="registry"'
put challenge 'bearer realm="http://127.0.0.1:5001/token", scope="a,b\"c"'
put token_reply '{"token":"abc","expires_in":300}'
put token_reply '{"access_token":"x","expires_in":-1,"issued_at":"2020-01-01T00:00:00Z"}'
put credentials $'\x00''{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"localhost:5000":{"username":"u","password":"p"}},"credHelpers":{"registry.example":"pass"}}'
put credentials $'\x00''{"auths":{"registry.example":{"identitytoken":"tok"}},"credsStore":"desktop"}'
put credentials $'\x01''{"ServerURL":"localhost:5000","Username":"<token>","Secret":"s"}'
put registry_config $'max_concurrent_downloads = 3\n\n[[registry]]\nprefix = "docker.io"\nlocation = "registry-1.docker.io"\ninsecure = false\n\n[[registry.mirror]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n'
if [ -f /usr/share/containers/seccomp.json ]; then cp /usr/share/containers/seccomp.json $c/seccomp_profile/seed-containers; fi
put seccomp_profile '{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}],"includes":{"caps":["CAP_SYS_ADMIN"],"minKernel":"4.8"}}]}'
for f in '{{.ID}}' 'table {{.ID}}\t{{.Names}}\t{{upper .State.Status}}' '{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}' \
  '{{if .State.Running}}up{{else}}down{{end}} {{json .Config}} {{printf "%s-%d" .Name 3}} {{index .Labels "a"}}' \
  '{{join .Args ","}} {{pad (truncate (title (lower .ID)) 3) 1 1}} {{len .Mounts}} {{split .ID "c"}} {{.Missing}}' \
  '{{define "x"}}{{.}}{{end}}{{range $i, $m := .Mounts}}{{template "x" $m.Source}}{{end}}{{$x := 1}}{{$x = 2}}'; do
  put format_template "$f"$'\x00''{"ID":"4f1c","Name":"web","Names":"web","Args":["-c","x"],"State":{"Running":true,"Status":"up","ExitCode":0},"Config":{"Env":["A=1"]},"Labels":{"a":"1"},"Mounts":[{"Source":"/a"}]}'
done
# Tar layers: a file, a directory, a symlink, a whiteout, a hard link, an escaping name.
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mkdir -p "$t/l/etc/dir" && echo hi >"$t/l/etc/hello" && ln -s ../../etc/hello "$t/l/etc/link" \
  && ln "$t/l/etc/hello" "$t/l/etc/hard" && : >"$t/l/etc/.wh.gone" && : >"$t/l/etc/dir/.wh..wh..opq"
for k in 0 1 2; do
  { printf "\\x0$k"; tar --numeric-owner --owner=0 --group=0 -C "$t/l" -cf - etc; } >$c/tar_layer/seed-layer-$k
done
{ printf '\x00'; tar -C "$t/l" -P --transform 's,^etc,../../escape,' -cf - etc/hello; } >$c/tar_layer/seed-escape
# lazy_index: a layer table, an index artifact, a gzip layer (first byte picks the parser).
T="{\"version\":1,\"layer\":\"$D\",\"compressed_size\":40,\"diff_id\":\"$D\",\"uncompressed_size\":2048,\"checkpoints\":[{\"input\":20,\"output\":1024,\"bits\":3,\"bit_buf\":5,\"window\":\"AAAA\"}],\"entries\":[{\"path\":\"etc/hello\",\"kind\":\"file\",\"mode\":420,\"uid\":0,\"gid\":0,\"mtime\":0,\"size\":6,\"offset\":512,\"digest\":\"$D\"},{\"path\":\"etc/l\",\"kind\":\"symlink\",\"mode\":511,\"uid\":0,\"gid\":0,\"mtime\":0,\"link\":\"hello\"}]}"
put lazy_index $'\x00'"$T"
S=sha256:$(printf '%s' subject | sha256sum | cut -d' ' -f1)
put lazy_index $'\x01'"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"artifactType\":\"application/vnd.skiff.lazy.index.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"$D\",\"size\":2},\"layers\":[{\"mediaType\":\"application/vnd.skiff.lazy.toc.v1+json+gzip\",\"digest\":\"$D\",\"size\":9,\"annotations\":{\"dev.skiff.lazy.layer\":\"$D\"}}],\"subject\":{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$S\",\"size\":1}}"
put lazy_index $'\x01'"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$D\",\"size\":3,\"artifactType\":\"application/vnd.skiff.lazy.index.v1+json\"}]}"
# Format 2: the checkpoint's window in the layer's windows blob.
T2="{\"version\":2,\"layer\":\"$D\",\"compressed_size\":40,\"diff_id\":\"$D\",\"uncompressed_size\":2048,\"checkpoints\":[{\"input\":20,\"output\":1024,\"bits\":3,\"bit_buf\":5,\"window_at\":[0,20]}],\"windows\":{\"digest\":\"$D\",\"size\":20},\"entries\":[{\"path\":\"etc/hello\",\"kind\":\"file\",\"mode\":420,\"uid\":0,\"gid\":0,\"mtime\":0,\"size\":6,\"offset\":1500,\"digest\":\"$D\"}]}"
put lazy_index $'\x00'"$T2"
{ printf '\x02'; tar --numeric-owner --owner=0 --group=0 -C "$t/l" -cf - etc | gzip -6; } >$c/lazy_index/seed-gzip
