# sam2grasp API service on a CUDA base image: `docker compose --profile sim up` (see docker-compose.yml).
# Models and the camera/robot calibration are mounted as volumes, not baked in.
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MUJOCO_GL=egl

# Python 3.11 (the project's version), headless OpenGL for MuJoCo, libusb for the RealSense camera
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common ca-certificates gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv python3.11-dev build-essential \
      libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libusb-1.0-0 \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the CUDA index matching the base image (the default resolution would pick another build)
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
RUN pip install --upgrade pip setuptools wheel \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY grounding ./grounding
COPY pipeline ./pipeline
COPY policy ./policy
COPY robot ./robot
# editable: the code finds models/ next to itself, where the volume is mounted
RUN pip install -e . \
 && SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps sam2==1.1.0

RUN useradd --create-home --uid 1000 sam2grasp && mkdir -p /app/models /app/calibration \
 && chown sam2grasp /app/models /app/calibration
USER sam2grasp
VOLUME ["/app/models", "/app/calibration"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
  CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"

ENTRYPOINT ["sam2grasp"]
CMD ["serve", "--backend", "sim", "--host", "0.0.0.0", "--port", "8000"]
