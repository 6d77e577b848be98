# A local stand-in for `gcr.io/distroless/cc-debian12:nonroot`, built the
# way distroless is: the files of a few Debian packages (glibc, libgcc,
# libstdc++, OpenSSL's libraries, CA certificates, time zones) unpacked
# into an empty image, with no shell and no package manager, and the
# `nonroot` user (uid 65532) as the default user.
FROM debian:bookworm-slim AS assemble
RUN apt-get update \
 && mkdir -p /debs /rootfs && cd /debs \
 && apt-get download base-files netbase tzdata libc6 libgcc-s1 libgomp1 libstdc++6 libssl3 \
 && for deb in /debs/*.deb; do dpkg-deb -x "$deb" /rootfs; done \
 && rm -rf /rootfs/usr/share/doc /rootfs/usr/share/man /rootfs/usr/share/info /rootfs/usr/share/lintian \
           /rootfs/usr/bin /rootfs/usr/sbin /rootfs/bin /rootfs/sbin \
 && mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/home/nonroot /rootfs/root \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && chmod 1777 /rootfs/tmp && chown 65532:65532 /rootfs/home/nonroot && chmod 700 /rootfs/root \
 && rm -rf /var/lib/apt/lists/*

FROM scratch
COPY --from=assemble /rootfs/ /
USER 65532:65532
WORKDIR /home/nonroot
