file test.elf
target remote :9001
