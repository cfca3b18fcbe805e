# Loupe's images. Three targets:
#   docker build -t loupe .                        the default (last stage): serves MLPs and CNNs (libtorch)
#   docker build --target slim -t loupe:slim .     MLPs only, no libtorch (under 150 MB)
#   docker build --target trainer -t loupe:trainer .   Debian's Python and torch with training/*.py
# Run: docker run -p 8080:8080 loupe   (serves the quick default MLP at once; mount a store at /models)
# `make image [TARGET=slim|default|trainer]` builds with docker, or with podman where there is none;
# scripts/test-image.sh TARGET builds one and checks it as a container runtime would run it.
# Packages come from scripts/packages.txt, by tag (scripts/install-deps.sh --only TAG).

# ==== Build stages: Debian bookworm, the project's install script and CMake ====
FROM debian:bookworm AS build-deps
WORKDIR /src
COPY scripts/install-deps.sh scripts/packages.txt scripts/
RUN scripts/install-deps.sh --only image && apt-get clean && rm -rf /var/lib/apt/lists/*

# The binary without libtorch, installed into /opt/loupe (bin/, share/loupe/), and the default
# model trained with it the way `make run` does (scripts/run-default.sh): relu, 20 epochs.
FROM build-deps AS build-slim
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLOUPE_WITH_TORCH=OFF >/dev/null \
 && cmake --build /build -j"$(nproc)" --target loupe \
 && cmake --install /build --prefix /opt/loupe \
 && /opt/loupe/bin/loupe train-mlp --activation relu --epochs 20 --out /opt/models/mlp-relu

FROM build-deps AS build-torch
RUN scripts/install-deps.sh --only image-torch && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DLOUPE_WITH_TORCH=ON >/dev/null \
 && cmake --build /build -j"$(nproc)" --target loupe \
 && cmake --install /build --prefix /opt/loupe

# ==== Runtime stages: bookworm-slim, only the runtime libraries, a non-root user ====
# Each root file system is made on debian:bookworm-slim by scripts/image-root.sh (the packages
# tagged in scripts/packages.txt, no documentation or translations, the user loupe, uid/gid 10001,
# /models and /reports), then copied into one layer: files the base had and the stage removed
# would otherwise still count in the image's size.
FROM debian:bookworm-slim AS slim-root
COPY scripts/image-root.sh scripts/install-deps.sh scripts/packages.txt /tmp/deps/
RUN /tmp/deps/image-root.sh runtime && rm -rf /tmp/deps

FROM debian:bookworm-slim AS trainer-root
COPY scripts/image-root.sh scripts/install-deps.sh scripts/packages.txt /tmp/deps/
RUN /tmp/deps/image-root.sh runtime,trainer && rm -rf /tmp/deps

FROM debian:bookworm-slim AS default-root
COPY scripts/image-root.sh scripts/install-deps.sh scripts/packages.txt /tmp/deps/
RUN /tmp/deps/image-root.sh runtime,runtime-torch && rm -rf /tmp/deps

# MLPs only: no libtorch.
FROM scratch AS slim
COPY --from=slim-root / /
COPY --from=build-slim /opt/loupe /usr/local
COPY --from=build-slim --chown=10001:10001 /opt/models /models
# Settings as LOUPE_* variables, not flags, so that a ConfigMap or `docker run -e` can change them
# (a flag would win over the variable). The HEALTHCHECK probes port 8080: change both together.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LOUPE_MODELS=/models \
    LOUPE_REPORTS=/reports \
    LOUPE_PORT=8080
# The daemon writes nothing outside /models, /reports and /tmp: the root may be read-only.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["loupe", "probe", "http://127.0.0.1:8080/readyz"]
# Exec form: SIGTERM reaches loupe itself, which drains and exits 0.
ENTRYPOINT ["loupe"]
CMD ["serve"]

# Debian's Python with torch, torchvision and tqdm, the trainers in /usr/local/share/loupe/training
# and the loupe binary (train-mlp). For a Kubeflow PyTorchJob: train_vgg.py reads torchrun's variables.
FROM scratch AS trainer
COPY --from=trainer-root / /
COPY --from=build-slim /opt/loupe /usr/local
# HOME on /tmp: torch's and Python's caches under a read-only root.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/tmp \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["/usr/bin/python3", "/usr/local/share/loupe/training/train_vgg.py"]
CMD ["--help"]

# The default target (the last stage): the daemon with libtorch, for MLPs and TorchScript CNNs.
FROM scratch AS default
COPY --from=default-root / /
COPY --from=build-torch /opt/loupe /usr/local
COPY --from=build-slim --chown=10001:10001 /opt/models /models
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LOUPE_MODELS=/models \
    LOUPE_REPORTS=/reports \
    LOUPE_PORT=8080
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["loupe", "probe", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["loupe"]
CMD ["serve"]
