"""The tools the local broker needs: a Java 17+ runtime and Kafka's jars.

The jars come from Maven Central through ``mvn dependency:copy-dependencies``
on the packaged ``pom.xml`` and are cached per Kafka version, so Maven runs
once per machine and version, not once per start.
"""

from __future__ import annotations

import fcntl
import logging
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from engagement.errors import BrokerError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17

# Written into a version's jar directory only after Maven succeeded, so an
# interrupted download is never mistaken for a complete classpath.
STAMP_NAME = ".resolved"

MAVEN_TIMEOUT_SECONDS = 900.0

# `java -version` prints e.g. `openjdk version "17.0.15"` or, before Java 9,
# `java version "1.8.0_292"`, whose major version is the second number.
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version(version_output: str) -> int | None:
    """The major version in the text of ``java -version``, or None if absent."""
    match = _JAVA_VERSION.search(version_output)
    if match is None:
        return None

    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_java() -> str:
    """The path of a ``java`` on PATH that is at least Java 17."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            f"No `java` was found on PATH. Kafka {KAFKA_VERSION} needs Java "
            f"{MIN_JAVA_MAJOR} or newer: install a JDK or JRE (for example "
            f"`apt-get install openjdk-{MIN_JAVA_MAJOR}-jre-headless`) and put its "
            "`bin` directory on PATH."
        )

    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(
            f"Running `{java} -version` failed ({exc}). Kafka needs a working "
            f"Java {MIN_JAVA_MAJOR} or newer on PATH."
        ) from exc

    # The version goes to stderr, but some wrappers print it on stdout.
    output = result.stderr + result.stdout
    major = java_major_version(output)
    if major is None or major < MIN_JAVA_MAJOR:
        found = output.strip().splitlines()[0] if output.strip() else "no output"
        raise BrokerError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer, but "
            f"`{java} -version` reports: {found}. Install Java {MIN_JAVA_MAJOR}+ "
            "and put it first on PATH."
        )

    logger.debug("Using %s (Java %s)", java, major)
    return java


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            f"The Kafka {KAFKA_VERSION} jars are not cached yet and `mvn` is not on "
            "PATH to fetch them. Install Apache Maven 3.8 or newer (for example "
            "`apt-get install maven`) and run the command again."
        )
    return mvn


def jars_resolved(lib_cache: Path, version: str = KAFKA_VERSION) -> bool:
    return (lib_cache / version / STAMP_NAME).is_file()


def resolve_jars(lib_cache: Path, version: str = KAFKA_VERSION) -> Path:
    """The directory holding every jar of Kafka ``version``, fetched if needed."""
    jar_dir = lib_cache / version
    if jars_resolved(lib_cache, version):
        return jar_dir

    lib_cache.mkdir(parents=True, exist_ok=True)

    # Two starts at once (two terminals, parallel tests) must not both write
    # into the same directory; the second waits and then finds the stamp.
    with (lib_cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if jars_resolved(lib_cache, version):
            return jar_dir

        _run_maven(jar_dir, version)
        (jar_dir / STAMP_NAME).write_text(f"kafka {version}\n")

    logger.info("Cached the Kafka %s jars in %s", version, jar_dir)
    return jar_dir


def _run_maven(jar_dir: Path, version: str) -> None:
    mvn = find_maven()

    # Whatever an interrupted run left behind may be incomplete.
    if jar_dir.exists():
        shutil.rmtree(jar_dir)

    # Maven is run on a copy so nothing is ever written into the package.
    with tempfile.TemporaryDirectory(prefix="kafka-pom-") as build_dir:
        pom = Path(build_dir) / "pom.xml"
        pom.write_bytes(resources.files(__package__).joinpath("pom.xml").read_bytes())

        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={jar_dir}",
        ]
        logger.info("Fetching the Kafka %s jars with Maven", version)
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=MAVEN_TIMEOUT_SECONDS,
                cwd=build_dir,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"Maven did not finish fetching the Kafka {version} jars within "
                f"{MAVEN_TIMEOUT_SECONDS:.0f} s. Check the network access to Maven "
                "Central (or the mirror in ~/.m2/settings.xml) and try again."
            ) from exc

    if result.returncode != 0 or not any(jar_dir.glob("*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise BrokerError(
            f"Maven could not fetch the Kafka {version} jars (exit code "
            f"{result.returncode}). Check the network access to Maven Central (or "
            f"the mirror in ~/.m2/settings.xml) and try again. Maven said:\n{tail}"
        )
