"""One LLVM module's text -> an object file, optimized as a native library's parts are
(``native_build.build_objects``), in this process or in one of its own: run as a script, this file
reads a request (JSON: ``text``, ``triple``, ``cpu``, ``features``, ``loop_vectorize``) on stdin and writes the
object on stdout.  llvmlite serializes every LLVM call of a process behind one lock, so the parts of a long
kernel's library are optimized and emitted side by side only by processes.  Imports llvmlite only."""

from __future__ import annotations

import json
import sys


def object_of(text: str, triple: str, cpu: str, features: str, loop_vectorize: bool) -> bytes:
    """The object file of ``text`` for ``triple`` (position independent, O3).  The cores are vectors already
    (lanes by hand) or scalar by design (the point functions'): the SLP vectorizer finds nothing to gain in
    them, and on a long scalar core it is most of LLVM's time (LJ-48's value and vjp with their scalar cores:
    14.6 s with it, 11.3 s without, against 10.7 s without those cores), so it is off."""
    from llvmlite import binding
    binding.initialize_all_targets()
    binding.initialize_all_asmprinters()
    module = binding.parse_assembly(text)
    module.verify()
    target_machine = binding.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="pic", codemodel="default")
    options = binding.create_pipeline_tuning_options()
    options.speed_level = 3
    options.loop_vectorization = loop_vectorize
    options.slp_vectorization = False
    passes = binding.create_pass_builder(target_machine, options)
    passes.getModulePassManager().run(module, passes)
    return target_machine.emit_object(module)


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(object_of(**request))


if __name__ == "__main__":
    main()
