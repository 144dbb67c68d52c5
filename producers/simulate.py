"""A traffic simulator: schools, students, courses, visits, progress and drop-off.

Every benchmark and the demo's sample reuse it. Output is deterministic for a
seed. People are invented, ids are random, e-mails use example.org.

Each student registers on some day, enrols in one or more courses, and on each
following day visits with a probability that decays (some students stay keen,
most fade, some never start). A visit opens the course and one or more lessons,
finishing some of them; finishing every lesson of a module finishes it, every
module finishes the course, and some finishers open their certificate.
Deliveries come slightly out of order, as from a parallel sender.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

FIRST_NAMES = (
    "Ana Bruno Carla Diego Elisa Fabio Gabriela Heitor Iara Joao Katia Lucas Marina "
    "Nuno Olivia Paulo Quesia Rafael Sofia Tiago Ursula Vitor Wanda Xavier Yara Zeca"
).split()
LAST_NAMES = "Ficticio Exemplo Modelo Simulado Teste Amostra Inventado".split()
COMMENTS = (
    "Muito bom, obrigado!",
    "Fiquei com uma dúvida nesta parte.",
    "Vou rever amanhã.",
    "Excelente explicação.",
)
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Scale:
    schools: int = 2
    students_per_school: int = 25
    courses_per_school: int = 3
    modules_per_course: int = 3
    lessons_per_module: int = 4
    days: int = 45
    end: datetime = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    seed: int = 7
    disorder: int = 8  # how far, in deliveries, an event may move from its place


def _hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _event_id(rng: random.Random) -> str:
    return "".join(rng.choices(_ID_ALPHABET, k=25))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _School:
    def __init__(self, rng: random.Random, index: int, scale: Scale) -> None:
        self.team = {"id": _hex_id(rng), "name": f"Escola Simulada {index + 1}"}
        self.courses = []
        for c in range(scale.courses_per_school):
            modules = []
            for m in range(scale.modules_per_course):
                lessons = [
                    {"id": _hex_id(rng), "name": f"Aula {m + 1}.{lesson + 1}"}
                    for lesson in range(scale.lessons_per_module)
                ]
                modules.append(
                    ({"id": _hex_id(rng), "name": f"Módulo {m + 1}"}, lessons)
                )
            course = {
                "id": _hex_id(rng),
                "name": f"{self.team['name']} — Curso {c + 1}",
            }
            self.courses.append((course, modules))


def _student(rng: random.Random, number: int) -> dict[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    return {
        "id": _hex_id(rng),
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{number}@example.org",
    }


def _body(rng: random.Random, name: str, at: datetime, data: dict) -> dict[str, Any]:
    return {
        "id": _event_id(rng),
        "event": f"alpaclass.{name}",
        "sentDate": _iso(at),
        "data": data,
    }


def _student_events(
    rng: random.Random, school: _School, student: dict, scale: Scale
) -> Iterator[dict[str, Any]]:
    start = scale.end - timedelta(days=scale.days)
    registered = start + timedelta(seconds=rng.uniform(0, scale.days * 86_400 * 0.8))
    created = {**student, "createdAt": _iso(registered), "locale": "pt_BR"}
    yield _body(
        rng, "student_created", registered, {"student": created, "team": school.team}
    )

    keenness = rng.choice((0.0, 0.15, 0.35, 0.6, 0.85))
    decay = rng.uniform(0.9, 0.99)
    enrolled = rng.sample(school.courses, k=rng.randint(1, len(school.courses)))
    for course, modules in enrolled:
        lessons = [(module, lesson) for module, ls in modules for lesson in ls]
        finished: set[str] = set()
        day, chance = registered, keenness
        while day < scale.end and len(finished) < len(lessons):
            day += timedelta(days=1)
            chance *= decay
            if rng.random() >= chance:
                continue
            at = day.replace(hour=rng.randint(6, 22), minute=rng.randint(0, 59))
            at = min(at, scale.end)
            base = {"student": student, "course": course, "team": school.team}
            yield _body(rng, "student_course_last_seen", at, base)
            for module, lesson in lessons:
                if lesson["id"] in finished:
                    continue
                at += timedelta(minutes=rng.randint(3, 25))
                data = {**base, "lesson": lesson, "module": module}
                yield _body(rng, "student_lesson_last_seen", at, data)
                if rng.random() < 0.1:
                    extra = {**data, "comment": rng.choice(COMMENTS)}
                    yield _body(rng, "student_comment_created", at, extra)
                if rng.random() < 0.05:
                    yield _body(rng, "student_lesson_marked_as_favorite", at, data)
                if rng.random() < 0.8:
                    at += timedelta(minutes=rng.randint(1, 20))
                    finished.add(lesson["id"])
                    yield _body(rng, "student_lesson_finished", at, data)
                    module_ids = {
                        other["id"] for m, ls in modules if m is module for other in ls
                    }
                    if module_ids <= finished:
                        yield _body(
                            rng,
                            "student_module_finished",
                            at,
                            {**base, "module": module},
                        )
                if rng.random() < 0.5:
                    break
        if lessons and len(finished) == len(lessons):
            yield _body(rng, "student_course_finished", at, base)
            if rng.random() < 0.6:
                url = f"https://certificates.example.org/{course['id'][:8]}.pdf"
                yield _body(
                    rng,
                    "student_certificate_accessed",
                    at,
                    {**base, "certificateUrl": url},
                )


def simulate(scale: Scale) -> list[dict[str, Any]]:
    """Every body of the simulated traffic, in delivery order."""
    rng = random.Random(scale.seed)
    events: list[dict[str, Any]] = []
    number = 1000
    for s in range(scale.schools):
        school = _School(rng, s, scale)
        for _ in range(scale.students_per_school):
            number += 1
            events.extend(_student_events(rng, school, _student(rng, number), scale))

    # Sent in time order, but a parallel sender lets neighbours overtake.
    events.sort(key=lambda body: body["sentDate"])
    jitter = [i + rng.uniform(0, scale.disorder) for i in range(len(events))]
    return [
        body for _, body in sorted(zip(jitter, events, strict=True), key=lambda p: p[0])
    ]
