# The RewardPilot Stream image: the `rewardpilot` CLI on Python 3.11.
# Every compose service runs one `rewardpilot` subcommand from this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY rewardpilot ./rewardpilot
COPY consumer ./consumer
COPY producer ./producer
RUN pip install .

COPY examples ./examples

RUN useradd --create-home --uid 10001 rewardpilot
USER rewardpilot
ENV RP_HOME=/home/rewardpilot/.rewardpilot

ENTRYPOINT ["rewardpilot"]
CMD ["--help"]
