# v1 Studio. CPU image by default (runs the embedded demo model):
#   docker build -t v1studio . && docker run -p 8501:8501 -v $PWD/data:/app/data v1studio
# GPU image for the real v1-7B (mount the checkpoint, never downloaded at run time):
#   docker build -t v1studio:gpu --build-arg BASE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 --build-arg GPU=1 .
#   docker run --gpus all -p 8501:8501 -v /models/v1-7B:/model -e V1STUDIO_MODEL=/model v1studio:gpu
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG GPU=0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    V1STUDIO_DB=sqlite:////app/data/v1studio.db
WORKDIR /app

RUN if ! command -v python3 >/dev/null || ! python3 -m pip --version >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv python3-dev && \
      rm -rf /var/lib/apt/lists/*; fi

COPY requirements.txt pyproject.toml README.md ./
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN if [ "$GPU" = "1" ]; then pip install torch==2.13.0; \
    else pip install torch==2.13.0 --index-url ${TORCH_INDEX}; fi && \
    pip install -r requirements.txt
RUN if [ "$GPU" = "1" ]; then pip install packaging ninja && pip install flash-attn --no-build-isolation; fi

COPY v1core ./v1core
COPY storage ./storage
COPY app ./app
COPY pages ./pages
COPY streamlit_app.py ./
RUN pip install --no-deps -e . && mkdir -p /app/data

EXPOSE 8501
HEALTHCHECK CMD python3 -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"
CMD ["v1studio", "serve", "--host", "0.0.0.0", "--port", "8501"]
