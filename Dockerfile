# face-hpo on an NVIDIA GPU host: `docker compose up` builds this image (see docs/deployment.md).
#
# Base: 2.17.0-gpu is the newest official TensorFlow GPU image whose bundled CUDA and cuDNN match its
# TensorFlow build. In 2.18.0-gpu and later the image's CUDA libraries are older than the ones TensorFlow
# was built against, so TensorFlow finds no GPU and silently runs on the CPU (tensorflow/tensorflow#81344,
# #88348, #62412). It ships Python 3.11 and Keras 3.
FROM tensorflow/tensorflow:2.17.0-gpu

# Build with --build-arg USER_ID=$(id -u) --build-arg GROUP_ID=$(id -g) so files written to bind mounts
# (exports) belong to you on the host. (Not named UID: bash keeps that variable read-only.)
ARG USER_ID=1000
ARG GROUP_ID=1000

# `utility` makes the NVIDIA runtime mount nvidia-smi, with which `hpo worker --gpus all` counts the GPUs.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN python3 -c 'import sys; assert sys.version_info >= (3, 11), f"face-hpo needs Python >= 3.11, the base image has {sys.version}"'

# The image's TensorFlow, Keras and numpy were tested with its CUDA libraries: installing the project may
# add packages but never replace these (a resolver that upgrades numpy or Keras breaks TensorFlow here).
RUN python3 -m pip freeze \
        | grep -iE '^(tensorflow|keras|numpy|h5py|ml[-_]dtypes|protobuf)==' > /etc/pip-constraints.txt \
    && grep -q '^tensorflow==' /etc/pip-constraints.txt

RUN groupadd --gid "${GROUP_ID}" hpo \
    && useradd --uid "${USER_ID}" --gid "${GROUP_ID}" --create-home --shell /bin/bash hpo

# Dependencies first, from pyproject.toml alone, so editing the code does not reinstall them. No cpu/gpu
# extra: TensorFlow comes from the base image. The dlib extra (the dlib-resnet base) is: dlib-bin has a
# cp311 manylinux_2_28 wheel, which the image's Python 3.11 and glibc 2.35 take.
WORKDIR /opt/face-hpo
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["dlib"]))' \
        > /tmp/requirements.txt \
    && python3 -m pip install -c /etc/pip-constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY data ./data
COPY model ./model
COPY search ./search
RUN python3 -m pip install --no-deps . && rm -rf build ./*.egg-info

# Named volumes mounted here start as copies of these directories, so they belong to the hpo user too.
RUN mkdir -p /work/cache /work/artifacts /work/exports && chown -R hpo:hpo /work
WORKDIR /work
USER hpo
ENV HPO_WORKDIR=/work

ENTRYPOINT ["hpo"]
CMD ["--help"]
